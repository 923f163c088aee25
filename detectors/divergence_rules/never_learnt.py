"""Never learnt: from its first records on, the training loss has only risen above where it
started, and the validation loss rose with it. The step is too large from the start.

A run whose LR is too high for the model can get worse from its first update: each step
overshoots, and the loss on the data it trains on ends up above the untrained model's. In an
epoch log that is a handful of records, often with a dip in between, so neither the rise-by-rise
rules (:mod:`.climb` needs ``climb`` rises in a row) nor the level rules (:mod:`.sustained`
needs ``sustain`` records) see it. What no healthy run shows is the pair: a first epoch's
training loss is the average over an untrained start, so a learning model holds below it from
the second epoch on; and a training loss above its start with a validation loss rising too is
not memorisation (overfitting lowers the training loss while the held-out loss rises), it is the
weights moving the wrong way on every kind of data.

Condition: at least ``climb`` loss records, the training loss has never held below its start for
two records in a row (``features.rbest`` >= ``features.l0``: a start level that replaced a low
first draw counts as the start), this record and the one before both >= ``level_ratio`` x the
start, this record's loss at the highest level the loss has had (``features.worst``, the
running maximum of its fast average: a loss that is coming down from a peak is recovering, as a
fine-tune whose first logged batch was a lucky low one does), and the last validation loss
(``features.vlast``, at least two evaluations) above the first one and >= ``level_ratio`` x the
lowest one (``features.vbest``). Losses must be positive
(a ratio of a loss that can be negative, a GAN's or a log-likelihood's, says nothing).

Parameters
----------
``climb`` (:mod:`.climb`, the records needed) and ``level_ratio`` (:mod:`.sustained`, "well
above") are shared: no parameter of its own.
Set by: the tune part's i2dl grid-search member (training loss 16.6, 21.6, 20.0, 23.7, 28.3,
28.2 per epoch, validation 24.2, 22.5, 22.5, 35.7, 32.3, 43.9; its report calls the LR too
high) is caught at its sixth epoch. On the tune part's 66 healthy logs, their thinned and cut
variants and the benchmark's healthy runs (seeds 0-7) the condition never holds.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> train = [16.58, 21.59, 20.04, 23.74, 28.27, 28.17, 30.72]
>>> val = [24.23, 22.50, 22.50, 35.66, 32.34, 43.94, 48.81]
>>> recs = [Record(s, x, None, None, v) for s, x, v in zip(range(1, 8), train, val)]
>>> [(a.step, a.severity, a.evidence["rule"]) for a in drive(DivergenceDetector(), recs)]
[(6, 'critical', 'never_learnt')]

References
----------
bench/real/histories/timothyquark__i2dl__grid-search1__config1.csv (provenance in
bench/real/SOURCES.md); Smith 2017 (an LR range test: past the best LR the loss rises from the
start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector
    from ..features import Features


def check(d: DivergenceDetector, f: Features, i: int, x: float, l0: float, nl: int) -> tuple[str, str] | None:
    """On a loss row with at least ``climb`` losses and a validation loss logged before."""
    if nl < d.climb or not l0 > 0.0 or f.rbest[i] < l0 or f.nv[i] < 2:
        return None
    bar = d.level_ratio * l0
    if x < bar or f.b_lprev[i] < bar or x < f.worst[i]:
        return None
    v, vb = f.vlast[i], f.vbest[i]
    if not (vb > 0.0 and v > f.v0[i] and v >= d.level_ratio * vb):
        return None
    return (f"never learnt: the training loss has not held below where it started ({fmt(l0)}) and is "
            f"{fmt(x / l0)}x that at step {f.step[i]}, and the validation loss rose with it to {fmt(v)}, "
            f"{fmt(v / vb)}x its lowest ({fmt(vb)})", "never_learnt")


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    """Loss rows whose start is still their best and which sit ``level_ratio`` x above it."""
    l0 = f.a("l0")
    x = f.a("loss")
    return (f.a("nl") >= d.climb) & ~(f.a("rbest") < l0) & ~(x < d.level_ratio * l0) & \
        ~(x < f.a("worst")) & (f.a("nv") >= 2)
