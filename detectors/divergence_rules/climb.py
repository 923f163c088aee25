"""Slow climb: the raw loss rose on every one of many records in a row and has undone a large
part of the progress. A slow divergence in a sparse log, which no single record shows.

A run that slowly diverges (an LR that is fine early and too high later, Adam's late
instability near a tiny loss) climbs a little on each logged point. In a sparse log (a note that
lists selected iterations, an epoch log) such a climb lasts a handful of records, far fewer than
the level needs to stay high for :mod:`.sustained`, and no record is far enough out of the
noise for :mod:`.streak`. What tells it from a noisy plateau is the *order*: independent noise
rises ``climb`` records in a row with a chance of 1 in (``climb`` + 1)! (1 in 720 for 5), and
when it does, the climb spans about two of its record-to-record changes, not ``climb_z``.

Condition: ``climb`` or more consecutive rises of the raw loss (``features.up_n``), the latest
>= ``level_ratio`` x where the climb started (the loss before its first rise, or the raw best
``features.rbest`` when that is higher: a climb that starts from one lucky low record is mostly
its bounce back; on the progress scale, ``progress.LEVEL_SHARE``:
the climb has undone a quarter of the progress made, or added half the starting value when
the run started near it) *or* with this record's evaluation at ``level_ratio`` x the best one
(:func:`held_out_worse`) *or* back at or above the first loss (``features.l0``) from a start
``climb_z`` typical changes below it, in a log that begins where training began
(:func:`~losswatch.detectors.progress.logged_from_start`), while the evaluations, where at
least two were logged, are not at their best, and not while a logged LR still ramps up (all
the progress the run made is undone; see below), and the climb from that start >= ``climb_z`` x the typical
record-to-record change of the loss (``features.amp``). Not when the latest record is itself a
spike (:func:`~losswatch.detectors.spike.is_spike`, the spike rule's defaults): a bad batch at
the end of a noise wiggle is a spike, not a climb. Not under a cyclic LR on its way up (CLR and
SGDR raise the loss by design), as in :mod:`.sustained`.

Back above the first loss: a run whose loss falls little against its level (an epoch log of a
CIFAR CNN at ~1.6, a fine-tune) never climbs "half its level again" however long it climbs, yet
a climb record by record back above its first loss has undone every gain of the run. The first
loss of an epoch log is the average over the untrained start, and the first record of a step log
the untrained model itself: a model that learns holds below it, and one that climbs back past it
on each record is being pushed the wrong way by its steps. The test is on the loss's own
scale, so a constant added to the loss (another loss's offset) does not change it, where the
ratio to the level does. The fall before the climb must be real (``climb_z`` usual changes, as
the climb itself): the first record of a flat noisy loss is one draw, and the loss is back
above it on about half of its records (the tail of a healthy Alpaca fine-tune, cut to its
last 80 %, rose on five records in a row from its second one, past its first at its noise
floor, 0.033 below it: 2.7 usual changes). The usual change is an average over the records
seen, and an excerpt's first records are too few to know the noise: its first loss is one draw
of a level the run had reached, not the untrained start, and is not used (the benchmark's
healthy linear regression under a one-cycle LR at 10x, cut to begin at its middle,
bench/cadence.py: a dip from 0.62 to 0.44 and five rises to 0.71 within its first 12 records
passed both tests above). Where evaluations are logged and the last one is the best so far, the
climb is the training objective's (regularisation, augmentation or a harder curriculum switched
on: the model gets better on held-out data): not this case.
With the evaluations: a training loss that climbs on every record of an epoch log while the
held-out loss sits at 1.5x its best or more is the weights getting worse on every kind of data,
however small the climb is against the progress of a long descent (a memorising model's training
loss falls; a harder objective's evaluations improve). A CNN regressor's epoch log fell 2.58 ->
0.0609 and climbed on six epochs to 0.554 (a fifth of its progress, 8x its best) while its
evaluations went 0.060 -> 0.73 and 0.18: caught at its sixth rise. The evaluation must be logged
on the record itself (an older one may predate the climb).
The tune part's RMSProp CIFAR-10 run at lr 0.005 (bench/real, LR too high) falls 1.819 -> 1.623
at epoch 2 and climbs on each of the next seven epochs to 1.831 (13 % of its level, 12.8 usual
changes), its validation loss 1.545 -> 2.204: caught at epoch 9, where it passes its first loss.

Parameters
----------
climb : int, default 5
    Rises in a row.
    Set by: the real corpus's slow divergence (a Gaussian-image fit at a constant LR: best 0.071
    at iteration 1,500, then 0.075, 0.082, 0.086, 0.099, 0.157, 0.255 at the iterations the
    note lists) is caught at its fifth rise; 4 rises in a row come by chance once in 120 records
    of noise.
climb_z : float, default 5.0
    How many typical record-to-record changes the climb must span.
    Set by: chance climbs of independent noise span ~2.2 of them (the range of 6 draws). With
    the start at the loss before the first rise alone, healthy least-squares runs thinned to
    every 10th row had climbs of 5.3 of them from one low record (tests/test_cadence.py).

``level_ratio`` (:mod:`.sustained`), ``spike_z`` and ``spike_rel`` (:mod:`.spikes`) are shared.
Without the spike test, a benchmark least-squares run's injected 100x bad batch at the end of
five small noise rises was a climb.

Examples
--------
A fit that reached its best and then rises on every logged iteration:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> steps = [1, 100, 500, 1000, 1300, 1500, 1600, 1700, 1800, 2000, 3000, 5000]
>>> losses = [0.245, 0.115, 0.089, 0.075, 0.073, 0.071, 0.075, 0.082, 0.086, 0.099, 0.157, 0.255]
>>> alerts = drive(DivergenceDetector(), map(Record, steps, losses))
>>> [(a.step, a.severity, a.evidence["rule"]) for a in alerts]
[(3000, 'warning', 'climb')]

References
----------
bench/real/histories/lamco-admin__lamcogaussianimage__baseline1-divergence-finding.csv and
bench/real/histories/zhengzheren77__cifar10-classification__model-history-csv__rmsprop-bs32-lr0-005-vgg1.csv,
bench/real/histories/markdeng86__volatilitypredictiondeeplearning__training-history-csv.csv
(provenance in bench/real/SOURCES.md); Smith 2017 (cyclical learning rates raise the loss by
design).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt
from ..features import lr_ramping
from ..progress import _pratio, logged_from_start, pratio_arr
from ..spike import SPIKE_SUDDEN, is_spike

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector
    from ..features import Features


def check(d: DivergenceDetector, f: Features, i: int, x: float, l0: float, up_n: int) -> tuple[str, str] | None:
    """On a row with ``up_n >= climb``."""
    base = f.up_base[i]
    if f.rbest[i] > base:  # a lucky low record does not set where the climb started
        base = f.rbest[i]
    rise = x - base
    if not rise >= d.climb_z * f.amp[i]:
        return None
    back = not _pratio(x, base, l0) >= d.level_ratio
    lost_all = back and undone(d, f, i, x, base, l0)
    held_out = back and not lost_all and held_out_worse(d, f, i)
    if back and not (lost_all or held_out):
        return None
    if not (f.rev[i] >= 2 and f.lrdir[i] > 0) and \
            not is_spike(x, f.b_slow[i], f.b_sd[i], f.b_lprev[i], d.spike_z, d.spike_rel, SPIKE_SUDDEN):
        start = f"the best it held, {fmt(base)}," if base > f.up_base[i] else fmt(base)
        again = f", back above its first loss {fmt(l0)}" if lost_all else ""
        held = (f", with the validation loss at {fmt(f.val[i])}, {fmt(f.val[i] / f.vbest[i])}x its best"
                if held_out else "")
        return (f"climbed on each of its last {up_n} records, from {start} to {fmt(x)}{again} "
                f"({fmt(rise / f.amp[i]) if f.amp[i] > 0.0 else 'many'} times its usual change "
                f"from one record to the next){held}", "climb")
    return None


def held_out_worse(d: DivergenceDetector, f: Features, i: int) -> bool:
    """This record's evaluation (losses positive) is ``level_ratio`` x the best one or more: the
    climb of the training loss is the weights getting worse on data they do not train on as
    well, not a memorising model (whose training loss falls) nor a harder objective (whose
    evaluations improve)."""
    vb = f.vbest[i]
    return bool(f.vok[i] and f.nv[i] >= 2 and vb > 0.0 and f.val[i] >= d.level_ratio * vb)


def undone(d: DivergenceDetector, f: Features, i: int, x: float, base: float, l0: float) -> bool:
    """All the progress the run made is undone: the climb is back at or above the first loss,
    from a start that lay ``climb_z`` usual changes below it, in a log that begins where
    training began, while the evaluations (where logged) are not at their best, and not while a
    logged LR still ramps up (a warm-up's bump: the streak rule exempts it the same way)."""
    if not (x >= l0 and l0 - base >= d.climb_z * f.amp[i]) or lr_ramping(f, i):
        return False
    if not logged_from_start(int(f.l0_step[i]), int(f.step[i]), int(f.nl[i])):
        return False  # an excerpt's first loss is one draw of a level the run had reached
    return not (f.nv[i] >= 2 and f.vlast[i] <= f.vbest[i])


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    """Rows with ``climb`` rises in a row that span ``climb_z`` usual changes and reach
    ``level_ratio`` x their start, the first loss, or an evaluation at ``level_ratio`` x its best
    (a chance run of rises in noise stops here: the rows that
    reach ``step`` cost the batch path its Python decision code)."""
    x = f.a("loss")
    base = np.maximum(f.a("up_base"), f.a("rbest"))  # NaN-safe enough: a NaN start is a "maybe"
    l0 = f.a("l0")
    return (f.a("up_n") >= d.climb) & ~(x - base < d.climb_z * f.a("amp")) & \
        (~(pratio_arr(x, base, l0) < d.level_ratio) | ~(x < l0) |
         (f.a("vok") & ~(f.a("val") < d.level_ratio * f.a("vbest"))))
