"""Relapse: the loss went back up after the LR was raised and holds above the best it reached
at the lower LR. The LR is past the edge of stability: the run is unstable, not lost.

Condition, on a loss record (the LR logged):

- the raw best (``features.rbest``, the lowest loss held for two records) was set at least
  ``hold`` loss records ago, at an LR that the LR now exceeds ``lr_rise`` x or more (a warm-up
  that climbed past where the loss was lowest, an LR raised by hand);
- both the loss level (``features.slow``, ~10 records) and the trend (``features.trend``, ~50
  records) gave back ``give_back`` of the progress made down to that best (first loss - best)
  or more, and the level sits ``z`` noise units (``features.sd``) above it
  (``progress.climbed_back``): the run gave back that share of its progress and stayed there,
  it is no spike;
- the trend is still below the first loss (a run back above where it started is lost: the
  divergence detector reports it), and the LR has reversed direction fewer than two times (a
  cyclic LR moves the loss by design).

A too-small LR cannot make the loss climb back up; a too-large one does, as an LR range test
shows: the loss falls while the LR is small, then rises once the LR passes the edge of
stability. The plateau detector therefore never calls such a loss "stuck at a too-small LR"
(plateau.py). The episode closes when the trend (held, not one lucky stretch) has given back
less than ``give_back / 2`` of the progress or the LR is back below ``lr_rise`` x the LR at the
best.

Parameters
----------
give_back : float, default 0.5
    The share of the progress that the level and the trend gave back.
    Set by: half the progress given back is the benchmark labels' own line for a lost run
    (bench/labels.py). On the tune part of the real corpus the one LR sweep whose warm-up
    climbed past its stable LR gave back 0.66 of its progress; of the other tune logs, the
    highest with the LR up since the best is 0 (0.16 without that condition, a fine-tune's
    epoch boundary). On the benchmark's seeds 0-1 no healthy or LR-too-low run reaches 0.5 with
    the LR up since the best (cnn SGD one-cycle at LR/10 reaches 0.53 of a progress of 2.4
    noise units, which ``z`` removes).
lr_rise : float, default 1.5
    How much higher the LR is now than at the best.
    Set by: warm-ups and raises move the LR by more than 2x; 1.5 leaves room for a cosine decay
    that has started.
hold : int, default 50
    Loss records since the best: the ~50-record trend is then made of records after it.
z : float, default 4.0
    Noise units by which the level sits above the best: the raw best is a minimum, 2-3.6 noise
    units below the mean of a flat run of 10^3-10^5 records, so a run that barely moved "gives
    back" half of its progress by chance (cnn SGD one-cycle at LR/10 on the benchmark: 0.53 of
    a progress of 2.4 units, its level 1.3 units above its best). The CS336 run's level is 6.7
    units above its best when the rule fires.

``min_records`` (30) and ``factor`` are shared with :mod:`.zigzag`.

Examples
--------
A warm-up to LR 0.1: the loss is lowest (4.1) at LR 0.036, then climbs to ~4.8 as the LR rises
and stays there:

>>> import random
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.oscillation import OscillationDetector
>>> from losswatch.detectors.types import Record
>>> r = random.Random(0)
>>> lr = lambda s: min(0.1, 0.004 * s / 10)
>>> loss = lambda s: 5.2 - 0.012 * s if s <= 90 else min(4.8, 4.1 + 0.006 * (s - 90))
>>> recs = [Record(s, loss(s) + r.gauss(0, 0.05), lr=lr(s)) for s in range(10, 2000, 10)]
>>> [(a.evidence["rule"], a.severity, a.action.params) for a in drive(OscillationDetector(), recs)]
[('relapse', 'warning', {'factor': 0.3})]

References
----------
bench/real/histories/div__xiamishaonian111__cs336__lr-sweep-1e-1-metrics.csv (provenance in
bench/real/SOURCES.md): a CS336 LR sweep whose run at peak LR 0.1 falls to 4.09 during the
warm-up, climbs back as the LR passes ~0.04 and stays at 4.3-5.3 until the cosine decay; the
author calls 0.1 past the edge of stability. Smith, "Cyclical learning rates for training neural
networks" (2017): the LR range test reads the largest good LR where the loss stops falling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import fmt
from ..progress import climbed_back, given_back

if TYPE_CHECKING:
    from ..features import Features
    from ..oscillation import OscillationDetector


def observe(d: OscillationDetector, f: Features, i: int) -> None:
    """Keep the loss-record count and the LR at the raw best, on the record that sets it."""
    if f.lok[i] and f.rbest_step[i] == f.step[i]:
        d.best_nl = f.nl[i]
        d.best_lr = f.lrlast[i]


def check(d: OscillationDetector, f: Features, i: int) -> tuple[str, dict[str, Any], str] | None:
    if not f.lrok[i] or f.nl[i] - d.best_nl < d.hold or f.rev[i] >= 2:
        return None
    lr, best_lr = f.lr[i], d.best_lr
    if not lr >= d.lr_rise * best_lr or not best_lr > 0.0:
        return None
    best, level, trend, l0 = f.rbest[i], f.slow[i], f.trend[i], f.l0[i]
    if not climbed_back(level, best, l0, f.sd[i], d.give_back, d.z) or given_back(trend, best, l0) < d.give_back:
        return None
    if not trend < l0:
        return None  # back above the first loss: a lost run, the divergence detector's
    share = given_back(level, best, l0)
    ev: dict[str, Any] = {"best": best, "best_step": f.rbest_step[i], "best_lr": best_lr,
                          "level": level, "lr": lr, "gave_back": share, "first_loss": l0}
    return (f"LR too high: unstable. The loss was {fmt(best)} at step {f.rbest_step[i]} at LR "
            f"{fmt(best_lr)}; with the LR now {fmt(lr)} it has climbed back to {fmt(level)} "
            f"({fmt(100 * share)}% of its progress given back) and stays there. The run is not "
            f"lost (below its first loss, {fmt(l0)})"), ev, \
        (f"The loss rose back as the LR went up: the LR is past the edge of stability (the loss was "
         f"lowest at LR {fmt(best_lr)}).")


def resolved(d: OscillationDetector, f: Features, i: int) -> str | None:
    # against the best and its LR when the alert was raised: ``observe`` moves ``d.best_lr`` to
    # the LR of any new best, which may be the high LR itself
    assert d.alert is not None  # called while an episode is open
    best, best_lr = d.alert.evidence["best"], d.alert.evidence["best_lr"]
    if f.lok[i] and f.rbest[i] < best:
        return f"a new best, {fmt(f.rbest[i])} at step {f.rbest_step[i]}"
    if f.lok[i] and given_back(f.trend[i], f.rbest[i], f.l0[i]) < 0.5 * d.give_back:
        return f"the loss is back near its best (trend {fmt(f.trend[i])})"
    if f.lrok[i] and f.lr[i] < d.lr_rise * best_lr:
        return f"LR back down to {fmt(f.lr[i])}"
    return None
