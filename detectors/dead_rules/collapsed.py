"""Collapsed: the network was at a lower loss, lost it, and now returns a constant output.

Condition, on a loss record: ``collapse_records`` consecutive losses at or above the first loss,
within ``chance_band`` (:mod:`.at_chance`) of each other, the raw best (``features.rbest``)
``collapse_drop`` below them: the run had been better than where it froze. Either it learned
and lost all of it (the best ``collapse_drop`` below the first loss, :func:`lost_progress`: a
video-only speech model from scratch, 3.14 -> 2.91, then 3.321-3.327 with its error rates pinned
at 1.0), or its loss rose from its start and froze above it, the evaluations over the frozen
losses frozen too (:func:`rose_to` and :func:`evaluations_rose_and_froze`: a 3-class CNN at 10x
its LR, 0.723 -> 0.943, then 1.068-1.070 epoch after epoch, its validation loss 0.708 ->
1.0768-1.0785 with its validation accuracy pinned at the majority class). A network that still
learns does not hold a level to 0.2 % far above a loss it already reached; a healthy run at its
first loss (the benchmark's character models print 4.587 within 0.2% for their first 5-7
records) has been no better than that.

A training loss alone that rose and levelled off is no such evidence: healthy runs print it by
design. A GAN's generator loss rises from ln 2 as its discriminator learns and settles (a
smoothed log of it moves 0.1-1 % a record and holds 0.2 % for 5 records); a KL-annealed VAE's
loss rises with the KL weight and levels off; an auxiliary loss switched on mid-run lifts a
converged loss onto a new level; a fine-tune's first logged batch may be a lucky low; a Keras
per-batch running mean that opens on a below-average batch climbs to the epoch's mean; a
smoothed or rounded loss holds its level to 0.2 % once converged. The validation loss, measured
on a fixed set with no batch's luck or logger's smoothing in it, tells a network whose output is
constant: it scores the held-out set the same on each evaluation, and no better than it once did.
A rise without evaluations (or with fewer than ``RISE_EVALUATIONS`` over the frozen losses) is
left to the other rules, which give no LR advice on it.

A dead run that lost its progress (whichever rule saw it), or that this rule found frozen after
such a rise, is advised ``scale_lr``: the LR saturated the units.

Parameters
----------
collapse_records : int, default 5
    Set by: 4 or 5 records within 0.2% at or above the first loss after a 2-5% fall fire
    on no healthy benchmark run (seeds 0-7) nor healthy log of the corpus's tune part (5:
    two LR x10 runs stuck at chance); 5 is the frozen stretch of the shortest collapsed
    log of the corpus.
collapse_drop : float, default 0.05
    How far below the first loss (or below the frozen level, for a loss that rose to it; and the
    best evaluation below the frozen evaluations) the raw best must have been (relative):
    progress to lose.
    Set by: 0.02 and 0.05 flag the same runs (the collapsed log's best is 6% below its first
    loss; on the benchmark two LR x10 runs that sit at chance after learning). For the rise,
    reused, not tuned: the rising CNN's frozen level is 48 % above its best loss and its frozen
    evaluations 52 % above its first; a converged run's level moves 2 % (a level 2 % above the
    best is not a rise).

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.dead import DeadDetector
>>> from losswatch.detectors.types import Record
>>> losses = [3.1358, 2.9118, 2.9468, 3.3269, 3.3232, 3.3237, 3.3250, 3.3213]
>>> [(a.step, a.action.type, a.action.params) for a in drive(DeadDetector(), [Record(s, x) for s, x in enumerate(losses)])]
[(7, 'scale_lr', {'factor': 0.1})]

References
----------
bench/real/issues/smeetrs__deep_avsr__43.csv (provenance in bench/real/SOURCES.md): a
video-only speech model that learned, then collapsed above its first loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt
from ..copies import measurements
from . import Why

if TYPE_CHECKING:
    from ..dead import DeadDetector
    from ..features import Features


#: The fewest separate evaluations over the frozen losses that make a rise dead (the rise's
#: evidence beyond the training loss; see the module doc): two evaluations of a model that still
#: learns slowly may agree to 0.2 % by chance, three in a row less so; the rising CNN's log has
#: one per frozen loss (5).
RISE_EVALUATIONS = 3


def lost_progress(d: DeadDetector, f: Features, i: int) -> bool:
    """Had the run made progress (raw best ``collapse_drop`` below a positive first loss)?"""
    l0 = f.l0[i]
    return l0 > 0.0 and f.rbest[i] <= (1.0 - d.collapse_drop) * l0


def rose_to(d: DeadDetector, f: Features, i: int, level: float) -> bool:
    """Is ``level`` at or above a positive first loss and ``collapse_drop`` above the raw best (a
    loss that rose from its start and sits there)?"""
    l0 = f.l0[i]
    return l0 > 0.0 and level >= l0 and f.rbest[i] <= (1.0 - d.collapse_drop) * level


def screen(d: DeadDetector, f: Features) -> np.ndarray:
    """The loss rows at or above the first loss."""
    return f.a("loss") >= f.a("l0")


def evaluations_rose_and_froze(d: DeadDetector, f: Features, i: int) -> bool:
    """Did the evaluations seen over the frozen losses rise and freeze with them: at least
    ``RISE_EVALUATIONS`` separate ones, within ``val_chance_band``
    (:mod:`.evaluations_at_chance`) of each other, ``collapse_drop`` above the best evaluation?
    A network that returns a constant output scores the held-out set about the same each time
    (the dead logs of the corpus: within 0.2-1.2 %; the rising CNN's 0.16 %); a validation loss
    is measured on a fixed set, with no batch's luck and no logger's smoothing in it."""
    counts = [n for n, _ in d.cl_evals]
    if len(counts) < d.collapse_records or counts[-1] - counts[0] < RISE_EVALUATIONS - 1:
        return False
    vals = [v for _, v in d.cl_evals]
    lo, hi = min(vals), max(vals)
    return hi - lo <= d.val_chance_band * abs(lo) and f.vbest[i] <= (1.0 - d.collapse_drop) * lo


def observe(d: DeadDetector, f: Features, i: int) -> Why | None:
    """On a loss record: track the losses at or above the first one; the verdict."""
    x, nl, l0 = f.loss[i], measurements(d, f, i), f.l0[i]
    if not x >= l0:
        return None  # the run breaks by its record count
    if d.cl_last != nl - 1:
        d.cl_vals, d.cl_evals = [], []
    d.cl_last = nl
    d.cl_vals.append(x)
    d.cl_evals.append((f.nv[i], f.vlast[i]))
    del d.cl_vals[:-d.collapse_records], d.cl_evals[:-d.collapse_records]
    if len(d.cl_vals) < d.collapse_records:
        return None
    lo, hi = min(d.cl_vals), max(d.cl_vals)
    if hi - lo > d.chance_band * abs(lo):
        return None
    if lost_progress(d, f, i):
        return Why(f"the loss fell to {fmt(f.rbest[i])}, came back above where it started ({fmt(l0)}) and "
                   f"has sat at {fmt(lo)}-{fmt(hi)} for {len(d.cl_vals)} records", x)
    if rose_to(d, f, i, lo) and evaluations_rose_and_froze(d, f, i):
        return Why(f"the loss rose from {fmt(f.rbest[i])} to {fmt(lo)} and has sat within "
                   f"{fmt(100.0 * d.chance_band)}% of it for {len(d.cl_vals)} records, its validation loss "
                   f"frozen with it", lo, rose=True)
    return None


def forget(d: DeadDetector) -> None:
    d.cl_last = -1
