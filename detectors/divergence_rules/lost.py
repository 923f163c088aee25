"""Lost after a blow-up: the loss blew up and has been stuck where training started since.

Condition: no 1 % gain of the trend (``features.pstep``) for ``max(lost_patience,
lost_patience_frac x the steps since the first loss)`` steps, at least ``lost_min_records``
loss records, the trend >= ``stuck`` x the first loss
(:func:`~losswatch.detectors.lost.stuck_at_start`) and
:func:`~losswatch.detectors.lost.lost_after_blowup`: the trend is above the first loss, or the
loss once reached ``blowup`` x it. The LR broke the model (dead units at chance level, the
benchmark's Adam and SGD MLPs and CNNs at 100x their LR). A rule of this detector, not of the
plateau detector, so a run that diverged and then got stuck is one episode, and its advice is an
LR cut, not a raise. Such an episode closes only once the trend is back below ``stuck`` x the
first loss (:mod:`.recovery`).

Parameters
----------
lost_patience : int, default 200
    Steps without a 1 % gain of the trend, at least.
lost_patience_frac : float, default 0.25
    ... and at least this share of the steps so far (patience grows with the run).
stuck : float, default 0.9
    The trend at or above this multiple of the first loss is "where it started".
    Set by: a model dead at chance sits at its best, which is where it started: without the
    trend test in the recovery, its episode closed and re-opened every 51 records (8 alerts on
    one held-out CNN at 100x its LR, 21 repeated episodes on the benchmark).
blowup : float, default 2.0
    The multiple of the first loss that makes a stall a blow-up's remains.
    Set by: a too-small LR moves the loss down from where it started; it never passes through
    2x on the way.
lost_min_records : int, default 20
    Loss records needed before a run can be lost.

Examples
--------
A blow-up at the second record, then the loss back at its first value (chance) for good:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses = [2.3, 10.0] + [2.3] * 250
>>> alerts = drive(DivergenceDetector(), map(Record, range(len(losses)), losses))
>>> [(a.step, a.evidence["rule"]) for a in alerts]
[(200, 'lost')]
>>> print(alerts[0].message)  # doctest: +NORMALIZE_WHITESPACE
run lost at step 200: the loss blew up to 6.15 and has been stuck at 2.3 for 200 steps, not
below 0.9x its first loss (2.3 at step 0)

References
----------
:mod:`losswatch.detectors.lost`: the same test keeps the plateau detector from calling such a
run "LR too small".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt
from ..lost import lost_after_blowup, stuck_at_start
from .verdict import start_words

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector
    from ..features import Features


def check(d: DivergenceDetector, f: Features, i: int, step: int, l0: float) -> tuple[str, str] | None:
    """On a stalled row (``step - pstep >= lost_patience``) with ``lost_min_records`` losses."""
    since = step - f.pstep[i]
    p = d.lost_patience_frac * (step - f.l0_step[i])
    trend = f.trend[i]
    if since >= (p if p > d.lost_patience else d.lost_patience) and \
            stuck_at_start(trend, l0, d.stuck) and \
            lost_after_blowup(trend, l0, f.worst[i], f.sd[i], d.blowup):
        return (f"the loss blew up to {fmt(f.worst[i])} and has been stuck at {fmt(trend)} "
                f"for {since} steps, not below {fmt(d.stuck)}x {start_words(f, i)}", "lost")
    return None


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    step = f.a("step")
    l0 = f.a("l0")
    need = np.maximum(d.lost_patience_frac * (step - f.a("l0_step")), d.lost_patience)
    return ((step - f.a("pstep")) >= need) & \
        (~(f.a("trend") <= l0) | ~(f.a("worst") < d.blowup * np.abs(l0)))
