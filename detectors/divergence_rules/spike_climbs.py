"""A spike that climbs on: the record after a counted spike is higher still.

A bad batch lifts the loss on the record that saw it; the next record is a new batch on weights
that took one bad update, so its loss is lower than the spike's (it may stay above the level for
a while, but it comes down). A loss that rises *again* after the jump is no bad batch: the
update itself made the model worse and the next one made it worse still, which is a run-away
starting with a jump. On a sparse log (a line every 10 or 50 steps) that is all an excerpt may
show before the thread's "the loss jumped and never came down again".

Condition: the previous loss record was a counted spike (:mod:`.spikes`: a one-step jump far
out of the noise, from a normal value, to ``level_ratio`` x the best on the raw progress
scale), and this loss is higher than that spike and than every loss logged before the spike
(``features.top``), is itself a spike's height above the level before it (``spike_z`` noise
units and ``spike_rel`` of the level), ``level_ratio`` x the best, and ``level_ratio`` x the
first loss: past everything the run has learnt, into values it never held. A minibatch loss
that jumps about its level shows this pattern inside its own range (a fine-tune's per-batch
losses 0.50, 0.61, 0.98, 0.56, 0.81, 0.50, then 0.88 and 0.94): the second value is a draw like
the 0.98 before, not a climb. Below its first loss, a run whose LR is high but bounded bounces
back towards where it started and comes down again (the benchmark's least-squares runs under
SGD at 10x their LR swing 0.57 -> 1.06 -> 1.44 -> 1.89 -> 0.56 from a first loss of 1.45); the
run-aways after a descent are :mod:`.raw_runaway`'s and :mod:`.streak`'s. Never under a calm
grad-norm (:mod:`.causes`): a loss that rises while the gradient stays at its usual size is the
data, not the weights.

Parameters
----------
None of its own: ``spike_z``, ``spike_rel``, ``spike_min`` (:mod:`.spikes`) and
``level_ratio`` (:mod:`.sustained`) are shared, so "a spike" means here what it means to the
spike detector and to the other rules.

Examples
--------
A reranker fine-tune near its floor: a jump to 2.2x its level, then higher still (the grad-norm
of the last line was not logged):

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses = [0.2524, 0.2185, 0.2577, 0.2168, 0.298, 0.3283, 0.2134, 0.5352, 0.591]
>>> alerts = drive(DivergenceDetector(), map(Record, range(9), losses))
>>> [(a.step, a.evidence["rule"], a.action.params) for a in alerts]
[(8, 'spike_climbs', {'factor': 0.1})]

A bad batch's spike that comes down on the next record is left to the spike detector:

>>> losses = [0.2524, 0.2185, 0.2577, 0.2168, 0.298, 0.3283, 0.2134, 0.5352, 0.41, 0.3]
>>> drive(DivergenceDetector(), map(Record, range(10), losses))
[]

References
----------
bench/real/issues/flagopen__flagembedding__865.csv (provenance in bench/real/SOURCES.md): "after
training a while the loss jumps up and then never comes down again"; for the other side, the
first loss spike of BLOOM-176B in the BigScience chronicles (2.35 -> 5.10, then 3.49 on the next
iteration: a spike that recovered); bench/real/issues/thilinarajapakse__simpletransformers__12.csv,
the per-batch losses above ("why does the loss fluctuate so much?": a healthy fine-tune).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import fmt
from ..progress import RAW_SHARE, _pratio, _ratio
from ..spike import is_spike
from . import causes

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector
    from ..features import Features


def check(d: DivergenceDetector, f: Features, i: int, x: float, best: float, l0: float) -> tuple[str, str] | None:
    """On the loss record right after a counted spike (``d.spike_nl == f.nl[i] - 1``)."""
    prev = f.b_lprev[i]
    # ``x <= spike_top``: back within what the run held before the spike (NaN: not kept, not asked)
    if not x > prev or x <= d.spike_top or causes.grad_norm_calm(d, f, i) or \
            _pratio(x, best, l0, RAW_SHARE) < d.level_ratio or _ratio(x, l0) < d.level_ratio:
        return None
    # the spike's height against the level before this record (the previous value is not asked
    # to be normal: it is the spike); ``sudden`` 0: the height is the question, not the step
    if not is_spike(x, f.b_slow[i], f.b_sd[i], prev, d.spike_z, d.spike_rel, 0.0):
        return None
    return (f"did not come back after the spike at step {d.spike_step}: "
            f"{fmt(prev)} -> {fmt(x)}", "spike_climbs")
