"""Run-away from the raw best: the loss climbs back after a fast descent the level has not seen.

The EMA level (``features.slow``) lags a fast descent: a fine-tune logged every 50 steps falls
15 -> 1.4 in five points while its level is still ~11, so rules measured against the level
miss a blow-up that follows. This rule measures against the *raw best* (``features.rbest``:
the lowest loss the run held for two records in a row).

Condition: two or more rises in a row to >= ``raw_ratio`` x the raw best, the last two both
undoing at least ``raw_undo`` of the progress made (first loss - raw best: one bad batch at
the end of a noise wiggle is no run-away), corroborated by the grad-norm building up or the
LR ramping (:mod:`.causes`), or by a third rise. Only while the descent is fresh (and, on a log
that starts mid-run, real: ``raw_z``): the raw best
was set in the later half of the run so far, the slow trend (``features.trend``, ~50
records) is still >= ``level_ratio`` x the raw best and above it by half the progress
(``progress.LEVEL_SHARE``), and that trend gained 1 % (``features.pnl``) within the last
``raw_fresh`` loss records: the descent is still under way, which is when the level lags it.
A trend that has been flat for longer is a noise floor (its lowest values are luck, and 3x
them is the noise's own reach) or the slow recovery from a knock (the best it held was before
the knock): there the level has caught up and :mod:`.streak` judges the same rise in noise
units; within ``spike_memory`` records of a counted spike, :mod:`.sustained` does (the
aftermath of a bad batch).

Parameters
----------
raw_ratio : float, default 3.0
    How far above the raw best the loss must climb.
    Set by: the benchmark's noisy least-squares runs swing 3x their lowest value and recover
    (the freshness conditions leave them to :mod:`.streak`).
raw_undo : float, default 0.25
    The share of the progress the last two records must both undo.
raw_fresh : int, default 10
    Loss records since the trend's last 1 % gain, at most (the level's memory, ~10 records).
    Set by: the benchmark's run-aways after a descent come 0-3 records after such a gain (CNNs
    at 10x their LR lost at step 43-57, a softmax at 100x); its two healthy runs that got this
    rule's alert were 65 and 80 records past it (least squares at 10x at its noise floor, a
    CNN recovering from a bad batch at chance): false alarms 7 -> 5 on seeds 0-1, the same for
    any value from 5 to 60.

raw_z : float, default 5.0
    On a log that does not begin where training began (``progress.logged_from_start``: an
    excerpt, a resumed run, the tail of a finished one), the fall from the first loss to the
    raw best must be this many noise units (``features.b_sd``) or more. Such a log's first loss
    is one draw of whatever the run was doing, and its slow trend, started on that draw, settles
    towards the level for ~50 records: on a noise floor that reads as a "fresh descent" while
    the raw best is the floor's luck. Set by: the benchmark's healthy runs cut at their middle
    (bench/cadence.py's excerpts, seeds 0-1: memorised CNN/MLP/softmax losses of 0.01-0.15 per
    batch) fell 1.5-3.1 units to their raw best when this rule fired on them; a descent is far
    out of the noise (the example below: 12.7 units).

``level_ratio`` (:mod:`.sustained`) and ``spike_memory`` (:mod:`.spikes`) are shared.

Examples
--------
A fine-tune's fast descent, then three rises (the grad-norm is not logged):

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses = [15, 13, 3.8, 2.4, 1.4, 5.8, 7.1, 10.0]
>>> [(a.step, a.severity, a.evidence["rule"]) for a in drive(DivergenceDetector(), map(Record, range(8), losses))]
[(7, 'warning', 'raw_runaway')]

It is a warning: the loss still holds part of its progress (below the first loss, 15).

References
----------
The common practitioners' rule of thumb "loss > 3x its running minimum: cut the LR 10x", here
with the noise and freshness guards a benchmark of healthy runs needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import fmt
from ..progress import LEVEL_SHARE, logged_from_start

if TYPE_CHECKING:
    import numpy as np

    from ..divergence import DivergenceDetector
    from ..features import Features


def check(d: DivergenceDetector, f: Features, i: int, x: float, l0: float, step: int, up_n: int,
          gn_up: bool, ramping: bool, after_spike: bool) -> tuple[str, str] | None:
    rb = f.rbest[i]
    if up_n >= 2 and rb > 0.0 and x >= d.raw_ratio * rb and \
            f.trend[i] >= d.level_ratio * rb and f.trend[i] - rb >= LEVEL_SHARE * (l0 - rb) and \
            2 * (f.rbest_step[i] - f.l0_step[i]) > step - f.l0_step[i] and \
            f.b_lprev[i] - rb >= d.raw_undo * (l0 - rb) and (gn_up or ramping or up_n >= 3) and \
            f.nl[i] - f.pnl[i] <= d.raw_fresh and not after_spike and \
            (l0 - rb >= d.raw_z * f.b_sd[i] or logged_from_start(f.l0_step[i], step, f.nl[i])):
        why = " with the grad-norm up" if gn_up else (" while the LR warms up" if ramping else "")
        return (f"rose {up_n} records in a row{why} to {fmt(x / rb)}x the lowest loss it held "
                f"({fmt(rb)} at step {f.rbest_step[i]})", "raw_runaway")
    return None


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    return (f.a("up_n") >= 2) & ~(f.a("loss") < d.raw_ratio * f.a("rbest"))
