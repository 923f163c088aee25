"""Sustained: the loss level stays far above its best, and is not on its way back down.

Condition: the loss level (``features.slow``, the winsorised EMA) stays >= ``level_ratio`` x
its best (progress scale) for ``need`` consecutive loss records, the short-term average is not
falling back (``fast >= slow``) and is still >= ``keep`` x the highest it reached in this
excursion (a spike that is decaying is recovering, not diverging). ``need`` is what the LR
explains:

- the LR still ramping up on this record (warm-up, one-cycle before its peak):
  ``sustain_warmup`` records;
- the schedule already cutting it (falling after one reversal): ``sustain_decay``;
- an excursion that began within ``spike_memory`` records of a counted spike:
  ``sustain_after_spike`` (a bad batch's aftermath), unless the level is at or above
  ``above_start`` x the first loss (worse than the untrained model is no bad batch's doing);
- otherwise ``sustain``.

Under a cyclic LR going up (two reversals or more, rising), never: CLR and SGDR raise the loss
by design.

State (on the detector): ``hi_start``/``hi_last`` (the loss-record counts where the current run
of high levels began and was last seen), ``hi_peak`` (its highest short-term average) and
``hi_after_spike``; kept on every row the rules run on, whichever rule fires.

Parameters
----------
level_ratio : float, default 1.5
    How far above its best the level must be (also the bar for counted spikes, the freshness of
    :mod:`.raw_runaway` and a failed cut in :mod:`.escalation`).
sustain : int, default 10
    Records the level must hold (also the bar of :mod:`.escalation`).
    Set by: raised from 5 to 10 together with ``keep`` and the streak's ``base_ratio``: the
    benchmark's divergence false alarms went from 50 to 12.
keep : float, default 0.7
    The share of the excursion's peak the short-term average must still hold.
sustain_warmup : int, default 5
    Records while the LR still ramps up.
    Set by: BLOOM-104B diverged at the end of its warm-up; the benchmark's warm-up and
    one-cycle runs at 100x their LR are lost mid-ramp.
sustain_decay : int, default 30
    Records while the schedule is cutting the LR (it gets time to work).
sustain_after_spike : int, default 100
    Records for an excursion that follows a counted spike.
    Set by: BLOOM-176B's spike recovered in ~30 iterations; the benchmark's bad-batch
    excursions take up to ~100 (its labels' recovery window).
above_start : float, default 1.5
    The multiple of the first loss above which an excursion after a spike does not wait.
    Set by: the benchmark labels' "lost: above 1.5x the start"; held-out RNNs at 10x their LR
    spiked once, then sat at 3-4x the first loss and waited 200 steps for :mod:`.lost` (one is
    now caught at step 21; the held-out divergence lateness on seeds 4-5 went from 731 to 552
    steps).

``spike_memory`` (:mod:`.spikes`) is shared.

Examples
--------
A slow climb that zig-zags (no long run of rises, no record far out of the noise): the level
gets there:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses = [1.0] * 20 + [1.0 + 0.05 * k + (0.04 if k % 2 else -0.04) for k in range(1, 40)]
>>> alerts = drive(DivergenceDetector(), map(Record, range(len(losses)), losses))
>>> [(a.step, a.evidence["rule"]) for a in alerts], alerts[0].message.split(" and ")[-1]
([(46, 'sustained')], 'its level has stayed 1.93x its best for 10 records')

References
----------
BLOOM tr8-104B chronicles (divergence at the end of warm-up); Smith 2017 (cyclical learning
rates raise the loss by design).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lost import blew_up
from ..progress import above_best, pratio_arr

if TYPE_CHECKING:
    import numpy as np

    from ..divergence import DivergenceDetector
    from ..features import Features


def track(d: DivergenceDetector, f: Features, i: int, nl: int, after_spike: bool) -> int:
    """On a row whose level is >= ``level_ratio`` x best: extend (or start) the run of high
    levels; returns its length in loss records."""
    fast = f.fast[i]
    if d.hi_last != nl - 1:
        d.hi_start = nl
        d.hi_peak = fast
        d.hi_after_spike = after_spike
    elif fast > d.hi_peak:
        d.hi_peak = fast
    d.hi_last = nl
    return nl - d.hi_start + 1


def check(d: DivergenceDetector, f: Features, i: int, best: float, l0: float, slow: float,
          n_hi: int, ramping: bool) -> tuple[str, str] | None:
    """After :func:`track`, with ``n_hi`` its result."""
    if ramping:  # the LR is still ramping up: it, not a bad batch, drives the loss up
        need = d.sustain_warmup
    elif f.lrok[i] and f.lrdir[i] < 0 and f.rev[i] == 1:
        need = d.sustain_decay  # the schedule is already cutting the LR: give it time
    elif d.hi_after_spike and not (l0 > 0.0 and blew_up(slow, l0, d.above_start)):
        need = d.sustain_after_spike
    else:
        need = d.sustain
    fast = f.fast[i]
    if n_hi >= need and fast >= slow and fast >= d.keep * d.hi_peak and \
            not (f.rev[i] >= 2 and f.lrdir[i] > 0):  # a cyclic LR on its way up
        return f"its level has stayed {above_best(slow, best)} for {n_hi} records", "sustained"
    return None


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    """Rows whose level is high (the rule's state changes there)."""
    return ~(pratio_arr(f.a("slow"), f.a("best"), f.a("l0")) < d.level_ratio)
