"""Validation blow-up: on a record without a training loss, the validation loss and the
grad-norm blew up together.

Some logs carry no training loss: a results table with the validation metric and the
grad-norm per epoch, an evaluation line that also prints the grad-norm. There the validation
loss is what shows the weights. Either signal alone is no divergence: a bad batch spikes the
grad-norm and leaves the held-out loss alone (the grad-norm detector clips it), and a model
that memorises raises the held-out loss slowly under a calm gradient (overfitting). Both at
once mean the last updates were far larger than usual and made the model worse on data it does
not train on: the weights moved away.

Condition: a record with a finite validation loss and grad-norm and no training loss, from the
third validation loss on (``features.nv``): the validation loss >= ``val_ratio`` x the lowest
one so far (``features.vbest``) and the grad-norm >= ``gn_warn`` x its usual level (the EMA of
its log, ``features.b_mu``). The episode is a run diverging (critical): a validation loss at
3x its best has lost most of what was learnt.

Without a grad-norm either (a log of evaluations only, ``features.nl`` and ``features.ng`` 0),
the confirming evidence is the first evaluation: from the third evaluation on, a validation
loss >= :data:`LOST_RATIO` x its best and above the first evaluation has lost everything the
run learnt in one evaluation (an LR sweep member at 1e-3: its validation error 235 -> 127 over
eight epochs, then 377 at the ninth, which its report calls diverged). Overfitting raises the
held-out loss slowly; a transient evaluation spike (:mod:`losswatch.detectors.val_spike`) need
not come back above the untrained model's evaluation. But where one jump of the run already
came back below that bar on the next evaluation, the run's evaluations are known to jump and
recover (an evaluation path that misbehaves now and then: a YOLOv4 Keras log reads 2.33, 46.5,
2.04, 72.3, 1.93, 15.2, 1.98, 1934, 1.67): a jump is then a divergence only when the evaluation
after it is still at the bar, one evaluation later. Such a jump is seen to come back only where
it was not itself called lost: on the second evaluation (too early to judge, but followed). A
first jump from the third evaluation on is called lost at once: nothing in the log yet says
that its evaluations recover (the same YOLOv4 log with one more evaluation in front gets
"diverging" at its first jump).

Parameters
----------
val_ratio : float, default 3.0
    How far above its best the validation loss must be.
    Set by: the real corpus's DrivAerML surrogate (validation error 8.9-11 %, then 31.7 % with
    the grad-norm 0.5 -> 4.2, 'the model never recovers'); overfitting raises a validation
    loss by tens of percent, not 3x, in one evaluation.

``gn_warn`` (:mod:`.causes`) is shared.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> vals, gns = [10.2, 8.9, 11.2, 31.7, 35.7], [0.48, 0.45, 0.51, 4.24, 11.2]
>>> recs = [Record(s, None, g, None, v) for s, v, g in zip(range(85, 90), vals, gns)]
>>> [(a.step, a.severity, a.evidence["rule"]) for a in drive(DivergenceDetector(), recs)]
[(88, 'critical', 'val_blowup')]

References
----------
bench/real/issues/wandb__senpai__pr2761.csv (provenance in bench/real/SOURCES.md); PaLM and
BLOOM report the grad-norm rising with the loss when training diverges.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt

#: Without a grad-norm: how far above its best an evaluation above the first one must be (the
#: validation-spike note's 2x: the evaluation itself jumped, it did not drift).
LOST_RATIO = 2.0

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector
    from ..features import Features


def check(d: DivergenceDetector, f: Features, i: int) -> tuple[str, str] | None:
    """On a row with a finite validation loss and no finite training loss."""
    v, vb = f.val[i], f.vbest[i]
    if not vb > 0.0:
        return None
    if f.nl[i] == 0 and f.ng[i] == 0:  # evaluations only
        return _lost(d, f, i, v, vb)
    if f.nv[i] < 3 or not f.gok[i] or v < d.val_ratio * vb:
        return None
    mu = f.b_mu[i]
    if not (mu == mu and f.gn[i] >= d.gn_warn * math.exp(mu)):
        return None
    return (f"validation loss diverging: {fmt(v)} at step {f.step[i]} is {fmt(v / vb)}x its best "
            f"({fmt(vb)}) with the grad-norm at {fmt(f.gn[i])}, {fmt(f.gn[i] / math.exp(mu))}x its "
            f"usual level", "val_blowup")


def _lost(d: DivergenceDetector, f: Features, i: int, v: float, vb: float) -> tuple[str, str] | None:
    """A log of evaluations only: a jump to ``LOST_RATIO`` x the best and above the first
    evaluation, from the third evaluation on; held for a second evaluation where a jump of the
    run already came back (the state ``vj_last``, ``vj_back`` is kept from the second on)."""
    jump = v >= LOST_RATIO * vb and v > f.v0[i]
    last, d.vj_last = d.vj_last, jump
    if not jump:
        d.vj_back = d.vj_back or last
        return None
    if f.nv[i] < 3 or (d.vj_back and not last):
        return None
    held = " for a second evaluation (an earlier jump came back)" if d.vj_back else ""
    return (f"validation loss diverging: {fmt(v)} at step {f.step[i]} is {fmt(v / vb)}x its best "
            f"({fmt(vb)}) and above its first evaluation ({fmt(f.v0[i])}){held}", "val_lost")


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    """Rows without a training loss whose validation loss is logged."""
    return ~f.a("has_loss") & f.a("vok")
