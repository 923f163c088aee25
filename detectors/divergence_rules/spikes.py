"""Which loss spikes the divergence rules count, and how long they remember one.

A *counted spike* is the spike detector's one-step jump (:func:`~losswatch.detectors.spike.is_spike`,
with its defaults) that also starts from a normal record (the loss before it within
``prev_z`` noise units of the level: not a later jump inside the same excursion, where the
lagging level makes every value look like a spike) and reaches ``level_ratio`` x the best on
the raw progress scale (a memorising model's loss jumping from 0.01 to 0.1 is noise). The
rules :mod:`.lr_jump` and :mod:`.spike_cluster` fire on counted spikes; :mod:`.streak`,
:mod:`.raw_runaway` and :mod:`.sustained` treat what comes within ``spike_memory`` records of
one as a bad batch's aftermath until it proves otherwise.

A *kick* is a counted spike whose grad-norm shows one bad batch: logged on the spike's record
at >= ``gn_warn`` x its usual level while the record before was below half that (the gradient
jumped on the spike's own step, it did not build up; :mod:`.causes`). The batch throws the
weights far, and the loss on the normal batches that follow stays high until the optimiser
has brought them back: the benchmark's injected bad batch on a least-squares model (loss
0.73 -> 36, grad-norm 1.4 -> 216) sends the loss to 20-165 for the next 20 steps, each
with a grad-norm below the kick's (19-61), and the run is back at its level 50 steps later.
:mod:`.first_loss` waits through a kick's aftermath (``spike_memory`` records) while the
grad-norm stays below the kick's and at >= ``gn_warn`` x its level before the kick (the
optimiser still pulling the weights back: the benchmark's 19-61 against ~1.4); a run-away
raises its grad-norm past the kick's within a record or two, and a stuck one (the loss held
at 35x its start by saturated units) lets it fall back to its old level.

State (on the detector): ``spike_recs``, the record ordinals of the last ``cluster - 1``
counted spikes (a placeholder far in the past where there were fewer); ``spike_nl``,
``spike_step`` and ``spike_top``, the loss-record count and the step of the last one and the
highest loss logged before it (:mod:`.spike_climbs` asks whether the previous loss record was
it, and whether this one is higher than the run ever was); ``kick_rec``, ``kick_gn`` and
``kick_mu``, the record ordinal, the grad-norm and the grad-norm level before it
(``features.b_mu``, log scale) of the last kick. The count restarts (and the kick is forgotten)
when an episode resolves (:mod:`.recovery`).

Parameters
----------
spike_z : float, default 6.0 (:data:`~losswatch.detectors.spike.SPIKE_Z`)
    Noise units (the level's mean absolute deviation) a spike rises above the level.
    Set by: the spike detector's ``z`` (OLMo-core skips a step at z > 6), one constant for both.
spike_rel : float, default 0.2 (:data:`~losswatch.detectors.spike.SPIKE_REL`)
    ... and at least this share of the level. Set by: the spike detector's ``rel`` (the GPT-2
    speedrun's data spikes are +35-40 %; minibatch noise is a few %).
spike_min : int, default 5 (:data:`~losswatch.detectors.spike.SPIKE_MIN_RECORDS`)
    Loss records needed before a spike counts (the noise is no estimate before).
    Set by: the spike detector's ``min_records``.
spike_memory : int, default 30
    Records after a counted spike during which a rise is its aftermath.
    Set by: BLOOM-176B's spike recovered in ~30 iterations; the benchmark's injected bad-batch
    excursions recover in ~20.

``level_ratio`` (:mod:`.sustained`), ``prev_z`` (:mod:`.streak`) and ``gn_warn`` (:mod:`.causes`:
the kick's grad-norm) are shared. Without the
``level_ratio`` guard the benchmark had 63 divergence false alarms on memorising runs.

Examples
--------
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.features import FeatureTracker
>>> tracker = FeatureTracker()
>>> rows = [tracker.advance_one(s, x, None, None, None) for s, x in enumerate([1.0] * 10 + [2.0])]
>>> d = DivergenceDetector()
>>> [counted(d, f, 0, f.loss[0], f.best[0], f.l0[0]) for f in rows[-2:]]
[False, True]

References
----------
OLMo-core skip-step (z > 6 against 128 steps); Lightning Fabric SpikeDetection.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..progress import RAW_SHARE, _pratio, pratio_arr
from ..spike import SPIKE_SUDDEN, is_spike, spike_screen
from .causes import LOG_2

if TYPE_CHECKING:
    import numpy as np

    from ..divergence import DivergenceDetector
    from ..features import Features


def counted(d: DivergenceDetector, f: Features, i: int, x: float, best: float, l0: float) -> bool:
    """Is the loss ``x`` on row ``i`` a spike the rules count?"""
    return f.nl[i] > d.spike_min and _pratio(x, best, l0, RAW_SHARE) >= d.level_ratio and \
        f.b_lprev[i] - f.b_slow[i] <= d.prev_z * f.b_sd[i] and is_spike(
        x, f.b_slow[i], f.b_sd[i], f.b_lprev[i], d.spike_z, d.spike_rel, SPIKE_SUDDEN)


def remember(d: DivergenceDetector, f: Features, i: int, rec: int, nl: int, step: int) -> None:
    """Keep the counted spike on row ``i``: record ordinal ``rec`` (the oldest one drops out),
    loss-record count ``nl``, ``step`` and the highest loss logged before it, and, when its
    grad-norm shows one bad batch, the kick."""
    d.spike_recs = d.spike_recs[1:] + [rec]
    d.spike_nl, d.spike_step, d.spike_top = nl, step, f.b_top[i]
    g, gprev = f.gn[i], f.b_glast[i]
    if f.gok[i] and f.ng[i] >= 3 and g > 0.0 and gprev > 0.0 and \
            math.log(g) - f.b_mu[i] >= d.gn_warn_log and math.log(gprev) - f.b_mu[i] < d.gn_warn_log - LOG_2:
        d.kick_rec, d.kick_gn, d.kick_mu = rec, g, f.b_mu[i]


def after_kick(d: DivergenceDetector, f: Features, i: int) -> bool:
    """Is row ``i`` within ``spike_memory`` records of a kick, with its grad-norm logged, below
    the kick's and still >= ``gn_warn`` x the level before the kick (the optimiser is still
    pulling the weights back from the bad batch; a gradient back at or under its old level
    over a loss that stays high is a stuck run, not a recovery)?"""
    if not (f.rec[i] - d.kick_rec <= d.spike_memory and f.gok[i] and 0.0 < f.gn[i] < d.kick_gn):
        return False
    return math.log(f.gn[i]) - d.kick_mu >= d.gn_warn_log


def forget(d: DivergenceDetector) -> None:
    """The spikes counted so far belong to a closed episode: a new one needs new spikes."""
    d.spike_recs = [-(10**9)] * len(d.spike_recs)
    d.spike_nl = -1
    d.kick_rec, d.kick_gn, d.kick_mu = -(10**9), math.inf, -math.inf


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    """Rows of a batch where a counted spike may be."""
    return spike_screen(f, d.spike_z, d.spike_rel, d.spike_min) & \
        ~(pratio_arr(f.a("loss"), f.a("best"), f.a("l0"), RAW_SHARE) < d.level_ratio)
