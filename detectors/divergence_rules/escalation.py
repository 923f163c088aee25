"""Escalation: the advice was followed and did not work, so a further cut (same episode).

Condition: the LR the run reports is <= ``lr_followed`` x the LR at which the advice was given
(the cut was applied: by the Actor, a person or a scheduler), at least ``settle`` records have
passed at that lower LR, and the loss level has again stayed >= ``level_ratio`` x best for
``sustain`` consecutive records with the short-term average not below the level (the sustained
rule's evidence, not on its way down). Then the alert is updated (same id,
``evidence["escalation"]`` counts up, ``last_step`` moves) with another ``scale_lr``
x``factor``, at most ``max_escalations`` times per episode. ``evidence["rule"]`` stays the rule
that opened the episode (it decides how the episode may close), and ``best_step`` the last good
step before it: everything trained since was trained at an LR now known to be too high.

Why: one 10x cut is the classic first step, not always enough: an LR 30x-100x too high is still
3x-10x too high after it, and such a run blows up again or thrashes far above what it had
reached. Without an update the episode stays open and says nothing new, so whoever follows the
advice never hears that it was not enough. Requiring the LR drop makes it causal: the detector
judges the remedy only after it was taken.

State (on the detector): ``esc_lr`` (the LR when the advice was last given, -1 when none was
logged), ``esc_n`` (escalations so far), ``esc_drop`` (the loss-record count of the first record
at the lowered LR), ``esc_hi_start``/``esc_hi_last`` (the run of high levels since).

Parameters
----------
settle : int, default 30
    Records at the lowered LR before the cut is judged (three times the level's span).
    Set by: runs at 30x their LR that recover after a cut have their level back near its best
    within ~10 records.
lr_followed : float, default 0.5
    The LR drop (as a factor) that counts as the advice taken.
max_escalations : int, default 2
    Further cuts per episode.
    Set by: the closed-loop benchmark: a digits classifier at 100x its LR was still 10x too high
    after one cut (held-out loss 0.43-0.53 against 0.12 tuned).

``level_ratio`` and ``sustain`` (:mod:`.sustained`) and ``factor`` (:mod:`.verdict`) are shared.

Examples
--------
The advice (x0.1) is taken at step 5, and the loss stays where it ran away to:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses, lrs = [2.5, 2.4, 2.6, 3.1, 4.2] + [4.2] * 60, [1e-3] * 5 + [1e-4] * 60
>>> alerts = drive(DivergenceDetector(), map(Record, range(65), losses, [None] * 65, lrs))
>>> [(a.step, a.last_step, a.evidence.get("escalation"), a.action.params) for a in alerts]
[(4, 4, None, {'factor': 0.1}), (4, 35, 1, {'factor': 0.1})]

References
----------
AutoTrainer (Zhang et al. 2021): repair, then check that the repair worked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt
from ..progress import _pratio, _ratio, far_words
from ..types import Action

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector
    from ..features import Features


def arm(d: DivergenceDetector, f: Features, i: int) -> None:
    """The advice is given on row ``i``: remember its LR (a later drop below ``lr_followed`` x
    it means it was taken) and start counting afresh."""
    d.esc_lr = f.lr[i] if f.lrok[i] and f.lr[i] > 0.0 else -1.0
    d.esc_n = 0
    d.esc_hi_last = -1
    d.esc_drop = -1


def escalate(d: DivergenceDetector, f: Features, i: int, x: float, best: float, l0: float,
             slow: float, nl: int) -> None:
    """While an episode is open, on each loss record."""
    if d.esc_lr <= 0.0 or d.esc_n >= d.max_escalations or not f.lrok[i] or \
            f.lr[i] > d.lr_followed * d.esc_lr:
        return
    if d.esc_drop < 0:
        d.esc_drop = nl  # the first record at the lower LR
    if _pratio(slow, best, l0) < d.level_ratio:
        return
    if d.esc_hi_last != nl - 1:
        d.esc_hi_start = nl
    d.esc_hi_last = nl
    n = nl - d.esc_hi_start + 1
    if nl - d.esc_drop < d.settle or n < d.sustain or f.fast[i] < slow:
        return
    d.esc_n += 1
    d.esc_lr = f.lr[i]
    d.esc_hi_last = -1
    d.esc_drop = -1
    a = d.alert
    assert a is not None  # an open episode is what escalates
    ratio = _ratio(slow, best)
    ev = dict(a.evidence)
    good = ev.get("best_step", f.best_step[i])
    ev.update({"loss": x, "best": best, "best_since": f.best_step[i], "ratio": ratio,
               "lr": f.lr[i], "escalation": d.esc_n})
    far = far_words(ratio, best)
    msg = (f"loss still diverging after the LR was cut to {fmt(f.lr[i])}: its level "
           f"{fmt(slow)} has stayed {far} ({fmt(best)} at step "
           f"{f.best_step[i]}) for {n} records")
    reason = (f"The LR was cut but the loss has not come back ({far} for {n} "
              f"steps): the LR is still too high. Cut it another {fmt(1 / d.factor)}x "
              f"(x{fmt(d.factor)}) and restart from a checkpoint near step {good}, before "
              f"the trouble began.")
    d.update_episode(f.step[i], message=msg, evidence=ev,
                     action=Action("scale_lr", {"factor": d.factor}, reason), again=True)


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    """While an episode is open: the rows where the advice looks followed (the LR is down)."""
    if d.esc_lr > 0.0 and d.esc_n < d.max_escalations:
        return f.a("lok") & f.a("lrok") & ~(f.a("lr") > d.lr_followed * d.esc_lr)
    return np.zeros(f.n, dtype=bool)
