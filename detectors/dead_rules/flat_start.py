"""Flat from the start: every loss since the first record lies within a band of 0.2 % of its
level: the network has not moved since it was logged first.

A network that learns moves its loss by more than its minibatch noise over its first records
(the tune part's healthy logs spread 0.39 % or more over their first six records, the
benchmark's healthy runs 0.25 % or more); a network that does not learn prints the same level
with a little data noise (BERT pre-training whose loss sits at 11.165-11.183 from its first
logged step, above the uniform guess over its vocabulary but at no ln(k): 0.16 %). Unlike
:mod:`.frozen` the values need not repeat to four digits, and unlike :mod:`.at_chance` the level
need not be a known ln(k).

The evidence is thin: an excerpt cut from the end of a finished run (its LR decayed, its loss
converged) looks the same, and nothing in a few records tells the two apart. So the verdict is a
warning that asks to check the data and the initialisation, with no action (no stop): the rules
with stronger evidence (:mod:`.frozen`, :mod:`.at_chance`) come first and stop the run.

Condition, on a loss record: ``flat_start_records`` or more finite losses, every one since the
first within ``chance_band`` (relative, of the lowest) of each other, or ``flat_start_close_records``
values of their own (a value the same as the one before, a logger's copy, is not counted) within
half that band (:data:`CLOSE`), and the logged LR (if
any) not ramping up on this record (``features.lr_ramping``: a warm-up has not given the
network its LR yet). Once a loss leaves the band, or an evaluation moves out of the band of
the one before (a logger repeating its last training loss on evaluation rows while the model
learns), the rule is done for the run. An evaluation that moves within the band does not end
it: a network that does not learn evaluates within its data noise too, and the band is the
noise this rule allows the training loss (a move in the fourth digit, :mod:`.frozen`'s test
for a constant output, is far inside it).

Parameters
----------
flat_start_records : int, default 6
    records from the first: six is where the tune part's dead logs (0.07-0.16 % spread) and its
    healthy ones (>= 0.39 %) separate; over five records a healthy benchmark run (RNN/SGD, its
    first records at chance) already spreads < 0.2 %. The band is :mod:`.at_chance`'s
    ``chance_band`` (0.2 %): the band of a constant output with a little data noise.
flat_start_close_records : int, default 5
    values of their own from the first, within half the band (0.1 %): the closer the values,
    the fewer tell. A short excerpt of a network that does not learn shows five (Caffe's display
    loss of a MobileNet at a uniform output, 6.91161-6.90501 over its five prints: 0.096 %, and
    the same excerpt shifted off ln(k) by any constant); no healthy benchmark run (seeds 0-7),
    full or every 2nd/5th/10th/50th row, keeps its first five values within 0.1 % (the closest:
    0.14 %, a character RNN at 4.58 in its first five steps), and the tune part's healthy logs
    whose first five losses are that close are a logger's copies of one value (model cards that
    repeat the last training loss on each evaluation row), which count once. Without an action,
    as the six-record verdict.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.dead import DeadDetector
>>> from losswatch.detectors.types import Record
>>> losses = [11.170, 11.175, 11.183, 11.166, 11.170, 11.165]
>>> [(a.step, a.action.type) for a in drive(DeadDetector(), [Record(10 * s, x) for s, x in enumerate(losses)])]
[(50, 'none')]

References
----------
SageMaker Debugger's "loss not decreasing" rule (a loss that does not fall by a minimum share
over a window); Keras and PyTorch forum threads "loss does not decrease from the first epoch".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..copies import each_written, new_value
from ..features import lr_ramping
from . import Why

if TYPE_CHECKING:
    from ..dead import DeadDetector
    from ..features import Features


#: The close band, as a share of ``chance_band``: within it ``flat_start_close_records`` tell
CLOSE = 0.5


def _in_band(lo: float, hi: float, band: float) -> bool:
    return hi - lo <= band * abs(lo)


def screen(d: DeadDetector, f: Features) -> np.ndarray:
    """The loss rows up to and including the first that leaves the band (the rule must see it
    to end its run); none once the run has ended."""
    x = f.a("loss")
    out = np.zeros(len(x), dtype=bool)
    if not d.fs_alive:
        return out
    xs = np.where(f.a("lok"), x, np.nan)
    hi = np.fmax(np.fmax.accumulate(xs), d.fs_hi)  # fmax/fmin skip NaN (rows without a loss)
    lo = np.fmin(np.fmin.accumulate(xs), d.fs_lo)
    inside = ~(hi - lo > d.chance_band * np.abs(lo) * 1.0001)  # NaN (no loss yet) counts inside
    first_out = int(np.argmin(inside)) if not inside.all() else len(x) - 1
    out[: first_out + 1] = True
    return out


def observe(d: DeadDetector, f: Features, i: int) -> Why | None:
    """On a loss record: widen the band of the losses since the first; the verdict."""
    if not d.fs_alive:
        return None
    x = f.loss[i]
    d.fs_lo, d.fs_hi = min(d.fs_lo, x), max(d.fs_hi, x)
    d.fs_n += 1
    d.fs_new += int(new_value(f, i))
    if not _in_band(d.fs_lo, d.fs_hi, d.chance_band):
        d.fs_alive = False
        return None
    close = d.fs_new >= d.flat_start_close_records and _in_band(d.fs_lo, d.fs_hi, CLOSE * d.chance_band)
    if (d.fs_n >= d.flat_start_records or close) and not lr_ramping(f, i):
        d.fs_alive = False  # one verdict per run
        spread = (d.fs_hi - d.fs_lo) / abs(d.fs_lo) if d.fs_lo != 0.0 else 0.0
        return Why(f"the loss has stayed within {100 * spread:.2g}% ({d.fs_lo:.5g}-{d.fs_hi:.5g}) over "
                   f"its first {d.fs_n} records{each_written(d)}: a network that learns moves more than that", x,
                   sure=False)
    return None


def evaluation(d: DeadDetector, f: Features, i: int, prev: float) -> Why | None:
    """On an evaluation: an evaluation that left the band of the one before ends the run (the
    model changed); never a verdict."""
    v = f.val[i]
    if d.fs_alive and prev == prev and v == v and not _in_band(min(v, prev), max(v, prev), d.chance_band):
        d.fs_alive = False
    return None


def forget(d: DeadDetector) -> None:
    d.fs_alive = False


