"""Ten times the first loss, twice or with the validation loss: a fact that needs no history.

Condition: the first loss is positive and the loss is >= ``first_ratio`` x it on this record
and on the one before, from the third loss record on; or on this record and the one before that
while the record between them stayed >= sqrt(``first_ratio``) x the first loss (halfway to the
bar on the log scale): a blow-up that swings, 217, 46.2, 4,426 against a first loss of 6.44 (a
detector's log below with 5 added to every loss: 46.2 is 7.2x), is back above the bar once
more and never came down in between, which two separate bad batches do, the loss back at its
level between them. A run does not recover its weights from
there on its own; one such record alone can be a bad batch that the next step forgets, so two
are asked, or one when the validation loss (the last one logged,
``features.vlast``) is also >= ``first_ratio`` x the first validation loss: a bad batch does not
move the loss on held-out data, broken weights do. Two records are not enough in a kick's
aftermath (:mod:`.spikes`: one bad batch's gradient jumped on its own record and threw the
weights) while the grad-norm stays below the kick's and at >= ``gn_warn`` x its level before
the kick: the optimiser is bringing the weights back.
The episode it opens is a lost run (:mod:`.verdict`) and closes only once the trend is back
below ``stuck`` x the first loss (:mod:`.recovery`).

Parameters
----------
first_ratio : float, default 10.0
    The multiple of the first loss that no healthy run reaches.
    Set by: real logs: a fine-tune's loss 0.14 -> 25,238 -> 75,835 in two logged steps, an LM
    at 10.9 logging 270 then 182; the benchmark's injected 40-60x spikes last one record (so
    two records are asked, not one, unless the validation loss confirms); its injected bad
    batch on a least-squares model holds the loss at 24-195x its first value for 20 steps
    after the kick, under grad-norms below the kick's, and recovers (so a kick's aftermath
    waits, :mod:`.spikes`).

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> alerts = drive(DivergenceDetector(), map(Record, range(3), [0.85, 10.2, 478.0]))
>>> [(a.step, a.severity, a.evidence["rule"]) for a in alerts]
[(2, 'critical', 'first_loss')]

One record is enough when the validation loss blew up with it:

>>> losses, vals = [0.35, 0.22, 0.18, 0.16, 1.6e18], [5.1, 3.3, 3.2, 3.0, 1.9e7]
>>> alerts = drive(DivergenceDetector(), map(Record, range(5), losses, [None] * 5, [None] * 5, vals))
>>> [(a.step, a.severity, a.evidence["rule"]) for a in alerts]
[(4, 'critical', 'first_loss')]

References
----------
bench/real/issues/tensorflow__models__8423.csv (provenance in bench/real/SOURCES.md): a Faster R-CNN
whose loss jumps from ~0.1-1.0 to 25,237 and keeps growing; caught on the second record.
bench/real/issues/open-mmlab__mmdetection__4299.csv: a detector at lr 0.02 whose loss goes
1.44, 2.97, 212, 41.2, 4,421 (with a constant of 5 in the logged loss, 41.2 + 5 is 7x the
first loss, 6.44: the swing back under the bar is an artefact of the ratio).
bench/real/issues/juntang-zhuang__laddernet__1.csv: a LadderNet whose train loss goes 0.16 ->
1.6e18 and validation loss 3.05 -> 1.9e7 on the last epoch the thread shows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..base import fmt
from . import spikes
from .verdict import start_words

if TYPE_CHECKING:
    import numpy as np

    from ..divergence import DivergenceDetector
    from ..features import Features


def check(d: DivergenceDetector, f: Features, i: int, x: float, l0: float, nl: int) -> tuple[str, str] | None:
    if not (l0 > 0.0 and x >= d.first_ratio * l0 and nl > 2):
        return None
    if f.b_lprev[i] >= d.first_ratio * l0 and not spikes.after_kick(d, f, i):
        return (f"has been over {fmt(d.first_ratio)}x {start_words(f, i)} for two records",
                "first_loss")
    if f.b_lp2[i] >= d.first_ratio * l0 and f.b_lprev[i] >= math.sqrt(d.first_ratio) * l0 and \
            not spikes.after_kick(d, f, i):
        return (f"is over {fmt(d.first_ratio)}x {start_words(f, i)} again, two records after "
                f"the last time, and stayed over {fmt(math.sqrt(d.first_ratio))}x it in between",
                "first_loss")
    v0 = f.v0[i]
    if v0 > 0.0 and f.vlast[i] >= d.first_ratio * v0:
        return (f"is over {fmt(d.first_ratio)}x {start_words(f, i)}, "
                f"and so is the validation loss ({fmt(f.vlast[i])}, first {fmt(v0)})", "first_loss")
    return None


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    l0 = f.a("l0")
    return (l0 > 0.0) & ~(f.a("loss") < d.first_ratio * l0)
