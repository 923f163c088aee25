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

Or, fewer records where the print carries the evidence: ``unlearned_records`` evaluations in a
row that print the same value (the same float), carrying five significant digits or more
(:func:`five_digits`: 6.9442, 3.2973, 1.3863; not a four-digit print such as 2.861 or 0.5956),
each a separate evaluation or a rounded print (:func:`~losswatch.detectors.dead_rules.frozen.rounded_print`:
a Keras epoch line or a Trainer table row prints each evaluation once; a full-precision float
repeated on the training rows after an evaluation is an export that forward-filled it); where
the repeats are on consecutive rows, the log must show that it evaluates on every row (its
evaluations changed on two consecutive rows in a row, which a forward-filled evaluation or a
line written again never does: a training loss that froze with the evaluation does not tell,
a line written k times repeats both columns too), the evaluation not below 0.9 x the run's first
(:mod:`.frozen`'s bar for a converged evaluation: a run at the end of a long decay whose LR a
plateau schedule cut to nothing, unlogged, prints one value too), the run
longer than twice any run of one repeated evaluation before it (a logger's copies repeat every
value, a frozen model only from where it froze) and the LR not switched off as above. An
evaluation averages a fixed validation set: weights that still change move it in the fifth
digit between evaluations (a converged GPT-2 validation loss falls 1e-4 an evaluation,
2.9287, 2.9286), so the same five digits three times is a model that no longer changes (a
Lightning LSTM whose evaluations return 0.22974897921085358 again and again). The strength of the evidence sets the
count: two identical five-digit evaluations happen by chance (two healthy logs of the tune part
have one such pair), three in a row in none of its healthy logs; four significant digits repeat
on 4-7 rows of healthy logs (a converged fine-tune's 0.5956; a forward-filled 2.861), which
:mod:`.frozen` judges with its own guards.

The episode watches the validation loss: it closes once evaluations move off the value in the
sixth digit.

Parameters
----------
lr_off : float, default 0.01
    An LR at or below this fraction of its peak has switched training off (benchmark
    schedule bugs that reach 0 freeze their evaluations to the last digit).

``frozen_records`` (the run's length) is :mod:`.frozen`'s, and ``unlearned_records`` (the run of
repeated prints of five digits or more) too: three is the smallest run no healthy log of the tune
part shows (its longest is two), and the shortest dead epoch logs print three.

Examples
--------
Evaluations, each after a training record, of the same float: the third tells (the run of
repeated prints of five digits or more; six of the same six digits did before it):

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.dead import DeadDetector
>>> from losswatch.detectors.types import Record
>>> recs = [Record(s, 2.0 - 0.01 * s, val_loss=1.23456789 if s % 2 else None) for s in range(14)]
>>> [(a.step, a.evidence["watch"], a.action.type) for a in drive(DeadDetector(), recs)]
[(5, 'val_loss', 'stop')]

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


def five_digits(x: float) -> bool:
    """Does ``x`` carry five significant digits or more (6.9442, 0.22974897921085358), not a
    print of four or fewer (2.861, 0.5956, 2.3030 read back as 2.303)?"""
    ax = x if x >= 0.0 else -x
    if not 1e-200 < ax < 1e200:  # 0, NaN, inf, and magnitudes no loss has (the power overflows)
        return False
    q = ax * 10.0 ** (3 - math.floor(math.log10(ax)))  # four significant digits before the point
    return abs(q - round(q)) > 1e-6 * q


def evaluation(d: DeadDetector, f: Features, i: int, prev: float) -> Why | None:
    """On an evaluation: extend or break the runs of equal evaluations; the verdict."""
    from .frozen import rounded_print  # frozen reads this module's exact_repeat

    v = f.val[i]
    # a record without an evaluation since the last one makes this a separate evaluation, not a
    # copy of the last one on the next training line; in a log without a training loss every
    # record is an evaluation of its own
    apart = f.rec[i] - d.v_rec > 1 or f.nl[i] == 0
    d.v_exact = d.v_exact + 1 if apart and exact_repeat(v, prev) else 1
    lr, peak = f.lrlast[i], f.peak[i]
    off = lr == lr and lr <= d.lr_off * peak
    if d.v_exact >= d.frozen_records and not off:
        return Why(f"the validation loss has been {v:.6g} for {d.v_exact} separate evaluations in a "
                   "row: the weights no longer change", v, "val_loss", 5e-7 * abs(v))
    # the same print of five digits or more, each a separate evaluation or a printed line
    if prev == prev and v != prev and f.rec[i] - d.v_rec == 1:
        d.v_chg += 1  # evaluations that changed on consecutive rows, in a row
    else:
        d.v_chg = 0
    if d.v_chg >= 2:
        d.v_every = True
    if v == prev and five_digits(v) and (apart or rounded_print(v)):
        d.v_same += 1
    else:
        d.v_same_max = max(d.v_same_max, d.v_same)  # the run before this one ended
        d.v_same, d.v_same_sure = 1, False
    # the repeats are evaluations of their own: separate, or the log evaluates on every row, or
    # the training loss froze with the evaluation (a logger that forward-fills its evaluation
    # leaves the training loss moving; a zero-initialised head prints ln(k), the chance rules')
    d.v_same_sure = d.v_same_sure or (d.v_same > 1 and (apart or d.v_every))
    # an evaluation well below the run's first (0.9 x, :mod:`.frozen`'s bar) is a converged
    # run's, whose LR a plateau schedule may have cut to nothing unlogged
    converged = d.v_first > 0.0 and v < 0.9 * d.v_first
    if d.v_same >= d.unlearned_records and d.v_same_sure and d.v_same > 2 * d.v_same_max and not off \
            and not converged:
        return Why(f"the validation loss has printed {v:.6g} on {d.v_same} separate evaluations in a row, the same "
                   "five significant digits or more each time: the weights no longer change", v, "val_loss",
                   5e-6 * abs(v))
    return None


def forget(d: DeadDetector) -> None:
    d.v_exact = 0
    d.v_same, d.v_same_max, d.v_same_sure = 0, 1, False
