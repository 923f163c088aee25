"""Overshoot: within the first updates the loss jumped to several times the untrained model's.

Condition: on one of the first ``OVERSHOOT_RECORDS`` loss records of a log that begins where
training began (:func:`~losswatch.detectors.progress.logged_from_start`), at a step at most
``OVERSHOOT_SPAN`` x the first loss's step (which must be above 0), with a positive first loss,
the loss is ``overshoot`` x the first loss or more, and below ``first_ratio`` x it: a
loss that high is :mod:`.first_loss`'s, which waits one record to tell a blow-up from a bad
batch and calls what stays there a lost run.

Why: the first loss of a run is the untrained (or pre-trained) model's, the highest level a
healthy run holds: each of its first updates moves the weights downhill, so the next losses sit
at or below it, give or take a batch's noise. A loss several times above it within the first
updates means the updates threw the weights past the valley, to a place worse than where they
started: the step is too large for the curvature at the start (an LR too high from the first
step, or a warm-up missing). It needs no history: there is no history yet, and no later rule
sees it, because the loss usually comes back down (an unrealistic region the run then settles
in, far above what a stable LR reaches) and no record after it rises again. A bad batch alone
does not do it at the start: an untrained model costs about the same on every batch.

The episode starts as "LR too high, unstable" (a warning, :mod:`.verdict`'s ``UNSTABLE_RULES``):
one record cannot tell a run that settles from one that is lost; it turns critical if the loss
and its level stay at or above the first loss (:func:`.verdict.mark_lost`).

Parameters
----------
overshoot : float, default 3.0
    The multiple of the first loss that the first updates must not reach.
    Set by: on the tune part of bench/real, every log whose loss reaches 3x its first loss
    within its first records is a problem (divergence, nan or LR too high); the highest of the
    66 healthy logs there is 2.1x (a speech fine-tune whose first logged loss was a low draw:
    0.27, then 0.57); a regression net trained at LR 2 (its vignette: "the optimizer jumped
    right at the beginning into a completely unrealistic solution space") reaches 4.2x on its
    second epoch.

``OVERSHOOT_RECORDS`` (4) and ``OVERSHOOT_SPAN`` (4), constants: "the first updates" are the
first loss and the three records after it, within two doublings of the first loss's step. A
window of records alone moves with the logging interval: a speech fine-tune (tune part,
healthy) whose loss goes 0.27 at step 25 to 0.98 at step 150 as its warm-up ends has that value
on its second record once every 5th row is kept. Steps as a multiple of the first logged step
are the same at any interval and in any unit; a log that begins at step 0 gives no such scale
and is left out. Later a jump is a spike's or a run-away's (:mod:`.spikes`, :mod:`.streak`),
judged against the noise the run has shown by then.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses = [782.3, 3299.0, 258.7, 90.5, 25.0, 14.9, 14.5, 11.1, 12.6, 11.1]
>>> alerts = drive(DivergenceDetector(), map(Record, range(1, 11), losses))
>>> [(a.step, a.severity, a.evidence["rule"], a.action.params) for a in alerts if a.event == "raised"]
[(2, 'warning', 'overshoot', {'factor': 0.1})]

References
----------
bench/real/histories/citoverse__cito__vignette-b-training-nn__lr2-plateau.csv (provenance in
bench/real/SOURCES.md): a regression net at LR 2 whose loss goes 782 -> 3299 on its second
epoch, then settles at 9-14, far above the runs at LR 0.09-0.2. LeCun, Bottou, Orr and Müller,
"Efficient BackProp" (1998): a step above twice the inverse curvature overshoots the minimum
and the loss grows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt
from ..progress import logged_from_start
from .verdict import start_words

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector
    from ..features import Features

#: the first loss and the records after it that count as "the first updates"
OVERSHOOT_RECORDS = 4
#: ... and the steps: at most this many times the first loss's step (two doublings of the
#: training time the log began at: the same updates at any logging interval or step unit)
OVERSHOOT_SPAN = 4


def check(d: DivergenceDetector, f: Features, i: int, x: float, l0: float, nl: int) -> tuple[str, str] | None:
    if not (2 <= nl <= OVERSHOOT_RECORDS and l0 > 0.0 and x >= d.overshoot * l0):
        return None
    if x >= d.first_ratio * l0:
        return None  # :mod:`.first_loss` decides, on the next record: one bad batch or a blow-up
    first = int(f.l0_step[i])
    if not 0 < f.step[i] <= OVERSHOOT_SPAN * first or not logged_from_start(first, int(f.step[i]), int(nl)):
        return None  # past the first updates, a log without a scale for them, or an excerpt
    return (f"{fmt(x / l0)}x {start_words(f, i)} on loss record {nl} of the run: the first "
            f"updates overshot", "overshoot")


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    nl = f.a("nl")
    return (nl >= 2) & (nl <= OVERSHOOT_RECORDS) & (f.a("l0") > 0.0) & \
        ~(f.a("loss") < d.overshoot * f.a("l0")) & ~(f.a("step") > OVERSHOOT_SPAN * f.a("l0_step"))
