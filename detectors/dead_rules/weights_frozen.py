"""Weights frozen: separate evaluations return the same validation loss to six significant
digits: the weights no longer change.

Condition, on an evaluation: ``frozen_records`` evaluations in a row, each logged apart from the
one before (records without an evaluation between them: separate evaluations, not a logger
repeating the last one; in a log of evaluations only, every record), return the same validation
loss to six significant digits, printed with more than five (:func:`exact_repeat`). An
evaluation of weights that still change moves in the sixth digit, however converged the model;
the same float six times is a model whose weights no longer change (an optimizer that does not
step, parameters detached from it, an LR schedule at 0). Not while a logged LR is at or below
``lr_off`` x its peak: the schedule froze the weights on purpose, or a schedule bug the LR rules
report with the right advice.

The episode watches the validation loss: it closes once evaluations move off the value in the
sixth digit.

Parameters
----------
lr_off : float, default 0.01
    An LR at or below this fraction of its peak has switched training off (benchmark
    schedule bugs that reach 0 freeze their evaluations to the last digit).

``frozen_records`` (the run's length) is :mod:`.frozen`'s.

Examples
--------
Six evaluations, each after a training record, of the same float:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.dead import DeadDetector
>>> from losswatch.detectors.types import Record
>>> recs = [Record(s, 2.0 - 0.01 * s, val_loss=1.23456789 if s % 2 else None) for s in range(14)]
>>> [(a.step, a.evidence["watch"], a.action.type) for a in drive(DeadDetector(), recs)]
[(11, 'val_loss', 'stop')]

References
----------
bench/real/histories/devilmayhide__lstm-bade03_assignment__lightning-logs-version-2-metrics-csv.csv
(provenance in bench/real/SOURCES.md): a Lightning run whose evaluations repeat the same float.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from . import Why

if TYPE_CHECKING:
    from ..dead import DeadDetector
    from ..features import Features


def exact_repeat(x: float, prev: float) -> bool:
    """Is ``x`` the same value as ``prev`` to six significant digits, printed with more than five?

    A network whose weights still change moves its evaluation loss in the sixth digit between
    two evaluations; the same six digits (or the same float, as Lightning's and the Trainer's
    full-precision logs write it) mean the weights did not change. A value printed with five
    significant digits or fewer (0.2298, 2.3026) repeats at that precision while the model
    still moves: :func:`~losswatch.detectors.dead_rules.frozen.same_4_digits` and its guards
    judge those.
    """
    ax = x if x >= 0.0 else -x
    if not 1e-200 < ax < 1e200:  # 0, NaN, inf, and magnitudes no loss has (the power overflows)
        return False
    d = x - prev
    if d < 0.0:
        d = -d
    if not d <= 5e-7 * ax:
        return False
    q = ax * 10.0 ** (4 - math.floor(math.log10(ax)))  # five significant digits before the point
    return abs(q - round(q)) > 1e-6 * q


def evaluation(d: DeadDetector, f: Features, i: int, prev: float) -> Why | None:
    """On an evaluation: extend or break the run of separate equal evaluations; the verdict."""
    v = f.val[i]
    # a record without an evaluation since the last one makes this a separate evaluation, not a
    # copy of the last one on the next training line; in a log without a training loss every
    # record is an evaluation of its own
    apart = f.rec[i] - d.v_rec > 1 or f.nl[i] == 0
    d.v_exact = d.v_exact + 1 if apart and exact_repeat(v, prev) else 1
    lr, peak = f.lrlast[i], f.peak[i]
    if d.v_exact >= d.frozen_records and not (lr == lr and lr <= d.lr_off * peak):
        return Why(f"the validation loss has been {v:.6g} for {d.v_exact} separate evaluations in a "
                   "row: the weights no longer change", v, "val_loss", 5e-7 * abs(v))
    return None


def forget(d: DeadDetector) -> None:
    d.v_exact = 0
