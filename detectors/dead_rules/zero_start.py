"""Zero from the start: the loss is exactly 0 on its first record and stays there: the loss has
nothing to compute.

No network starts training at a loss of exactly 0: before any step its predictions are those of
its initialisation. A loss of 0.0 from the first record is a loss that sees no target (every
label masked out, ``-100`` on every token; an empty batch; a loss multiplied by a zero weight),
so the network gets no gradient and learns nothing (a fine-tune whose every label was masked:
0.0 on every record with a grad-norm of 0.0). :mod:`.frozen` needs six records for a repeated
value; here the value itself is the evidence, and two records (the second rules out a logger's
placeholder on the first line) are enough at any cadence. A run that reaches 0 after learning
(a model that memorised its data) did not start there and is not judged.

Condition, on a loss record: the first finite loss was exactly 0.0 and every loss since,
``zero_records`` or more of them, is exactly 0.0.

Parameters
----------
zero_records : int, default 2
    Records at exactly 0 from the first: the tune part's logs of this kind print 6-17 of them
    at every cadence; no healthy log of the tune part nor healthy benchmark run (seeds 0-7)
    starts at 0.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.dead import DeadDetector
>>> from losswatch.detectors.types import Record
>>> [(a.step, a.action.type) for a in drive(DeadDetector(), [Record(s, 0.0, 0.0) for s in range(0, 50, 10)])]
[(10, 'stop')]

References
----------
bench/real/issues/zai-org__glm-4__260.csv and bench/real/issues/facebookresearch__crystal-text-llm__3.csv
(provenance in bench/real/SOURCES.md): fine-tunes whose loss is 0.0 from the first step;
Hugging Face forum threads "training loss is 0.0 from the first step" (all labels -100).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import Why

if TYPE_CHECKING:
    from ..dead import DeadDetector
    from ..features import Features


def screen(d: DeadDetector, f: Features) -> np.ndarray:
    """The loss rows up to and including the first that is not 0 (the rule must see it to end
    its run); none once the run has ended."""
    out = np.zeros(len(f.a("loss")), dtype=bool)
    if not d.zs_alive:
        return out
    off = f.a("lok") & (f.a("loss") != 0.0)
    first_off = int(np.argmax(off)) if off.any() else len(out) - 1
    out[: first_off + 1] = True
    return out


def observe(d: DeadDetector, f: Features, i: int) -> Why | None:
    """On a loss record: end the run at the first loss that is not 0; the verdict."""
    if not d.zs_alive:
        return None
    if f.loss[i] != 0.0:
        d.zs_alive = False
        return None
    nl = f.nl[i]
    if nl < d.zero_records:
        return None
    d.zs_alive = False  # one verdict per run
    return Why(f"the loss has been exactly 0 on each of its {nl} records since the first: the loss "
               "sees no target (are all labels masked?)", 0.0,
               checks="The network gets no gradient: a loss of exactly 0 before any learning means the "
               "loss sees no target. Stop and check the labels (all masked, e.g. -100 on every token "
               "after the prompt was cut off?), the loss mask and the batch; an LR change will not help.")


def forget(d: DeadDetector) -> None:
    d.zs_alive = False
