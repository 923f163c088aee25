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
the run started near it), and the climb from that start >= ``climb_z`` x the typical
record-to-record change of the loss (``features.amp``). Not when the latest record is itself a
spike (:func:`~losswatch.detectors.spike.is_spike`, the spike rule's defaults): a bad batch at
the end of a noise wiggle is a spike, not a climb. Not under a cyclic LR on its way up (CLR and
SGDR raise the loss by design), as in :mod:`.sustained`.

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
bench/real/histories/lamco-admin__lamcogaussianimage__baseline1-divergence-finding.csv
(provenance in bench/real/SOURCES.md); Smith 2017 (cyclical learning rates raise the loss by
design).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt
from ..progress import _pratio, pratio_arr
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
    if rise >= d.climb_z * f.amp[i] and _pratio(x, base, l0) >= d.level_ratio and \
            not (f.rev[i] >= 2 and f.lrdir[i] > 0) and \
            not is_spike(x, f.b_slow[i], f.b_sd[i], f.b_lprev[i], d.spike_z, d.spike_rel, SPIKE_SUDDEN):
        start = f"the best it held, {fmt(base)}," if base > f.up_base[i] else fmt(base)
        return (f"climbed on each of its last {up_n} records, from {start} to {fmt(x)} "
                f"({fmt(rise / f.amp[i]) if f.amp[i] > 0.0 else 'many'} times its usual change "
                f"from one record to the next)", "climb")
    return None


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    """Rows with ``climb`` rises in a row that span ``climb_z`` usual changes and reach
    ``level_ratio`` x their start (a chance run of rises in noise stops here: the rows that
    reach ``step`` cost the batch path its Python decision code)."""
    x = f.a("loss")
    base = np.maximum(f.a("up_base"), f.a("rbest"))  # NaN-safe enough: a NaN start is a "maybe"
    return (f.a("up_n") >= d.climb) & ~(x - base < d.climb_z * f.a("amp")) & \
        ~(pratio_arr(x, base, f.a("l0")) < d.level_ratio)
