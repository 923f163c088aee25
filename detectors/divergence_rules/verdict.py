"""The verdict's words and severity: "LR too high, unstable" or "diverging / lost".

Every rule advises the same action, ``scale_lr`` x``factor``; the severity and the words say
what the data shows:

- **critical**, "loss diverging" (or "run lost" for :mod:`.lost`): the run has undone all its
  progress (:func:`undone`: the loss and its level at or above the first loss, on a log that
  begins where training began and a positive first loss: everything the run learnt is undone, or it blew up before
  learning), or the rule is :mod:`.lost` or :mod:`.first_loss`. Cut the LR; roll back if the
  loss does not come back;
- **warning**, "LR too high, the loss is unstable ... the run is not lost": the run-away still
  holds part of its progress (the loss or its level below the first loss), the log is an
  excerpt (its first loss is not the untrained model's), or the rule fired one record after a
  jump (:mod:`.spike_climbs`: a long excursion and a lost run look the same there). Cutting the
  LR is right, stopping the run is not: runs with an LR 10x too high that end stably show such
  run-aways. Below the first loss the advice is to let the run go on; a loss already above it
  (the jump of :mod:`.spike_climbs`) is to come back below it before its level climbs past it
  too, or the run is rolled back.

The same alert escalates from warning to critical (event ``escalated``) when the run has then
undone all its progress (the same :func:`undone`: "is back above" the first loss, or "has stayed
above" it when the loss was there already when the alert was raised); the advice becomes the
roll-back (same action, its reason replaced). The messages quote the raw best (``features.rbest``) when it is
lower than the level's best: after a fast descent the level is still far above the values the
run really held. How far above its best a loss is reads as a multiple ("3.2x its best") where
the best is positive and as a difference ("0.131 above its best") where it is zero or negative:
a log-likelihood or a critic's loss has no floor at zero, and a multiple of a negative best
means nothing. The evidence keeps the level's best (``best``, ``best_step``: the restart
point), the rule, the grad-norm and LR when logged, and what the raising words quoted
(``raised_ratio``, ``raised_above_start``, ``rollback_step``), which the escalation quotes
again.

Parameters
----------
factor : float, default 0.1
    The LR cut advised (also for each further cut, :mod:`.escalation`).
    Set by: the classic first step; AutoTrainer's first repair.

Examples
--------
A fine-tune's loss climbs back from its best while still below its first loss (a warning),
then past it (the same alert, now critical):

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses = [15, 13, 3.8, 2.4, 1.4, 5.8, 7.1, 10.0] + [20] * 13
>>> alerts = drive(DivergenceDetector(), map(Record, range(len(losses)), losses))
>>> [(a.step, a.last_step, a.event, a.severity) for a in alerts]
[(7, 7, 'raised', 'warning'), (7, 20, 'escalated', 'critical')]
>>> alerts[0].message.split(": ")[0], alerts[1].message.split(": ")[0]
('LR too high, the loss is unstable', 'loss diverging')

References
----------
AutoTrainer (Zhang et al. 2021), whose first repair for a diverging loss is the LR x0.1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import fmt
from ..features import lr_ramping
from ..progress import _ratio, above_best, far_words, logged_from_start
from ..types import Action
from . import escalation

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector
    from ..features import Features

#: Rules whose episode is a lost run from the start (whatever the loss holds)
LOST_RULES = ("lost", "first_loss")
#: Rules whose episode starts as "LR too high, unstable" (a warning) whatever the loss holds:
#: they fire one record after a jump, which cannot tell a lost run from a long excursion; the
#: episode turns critical (:func:`mark_lost`) if the loss and its level stay at the first loss
UNSTABLE_RULES = ("spike_climbs",)
#: The advice's last sentence while the LR warms up
WARM_UP = " The LR is still warming up: a longer warm-up or a lower peak LR is the usual fix."


def start_words(f: Features, i: int) -> str:
    """The start level on row ``i`` in words: the first loss and its step, or, once the start
    level replaced a low first draw (``features.l0_n``), the median it is: the loss logged at
    ``l0_step`` is then another value, and quoting it as "the first loss" would contradict the log."""
    n = f.l0_n[i]
    if n:
        return f"its start level ({fmt(f.l0[i])}, the median of its first {n} losses)"
    return f"its first loss ({fmt(f.l0[i])} at step {f.l0_step[i]})"


def start_tells(f: Features, i: int, l0: float) -> bool:
    """Can the start level ``l0`` tell a lost run on row ``i``: it is positive, on a log that
    begins where training began (:func:`~losswatch.detectors.progress.logged_from_start`)?

    An excerpt's first loss is one draw of whatever the run was doing when the log began (a
    resumed run, a thread's pasted lines), not the untrained model's: a loss back at it has not
    undone what was learnt before it (a transient spike in a noisy stretch reaches it and comes
    back). A first loss at or below zero (a log-likelihood, a critic's loss: no floor at zero)
    does not say how far above it a run may go and come back: a normalising flow's likelihood
    jumps from -7.9 to 3.5e6 for a step and recovers."""
    return l0 > 0.0 and logged_from_start(f.l0_step[i], f.step[i], f.nl[i])


def undone(f: Features, i: int, x: float, l0: float, slow: float) -> bool:
    """Has the run undone all its progress on row ``i``: the loss ``x`` and its level ``slow`` at
    or above a start level ``l0`` that can tell (:func:`start_tells`)? The one test of a lost
    run, for a new alert (:func:`raise_alert`) and an open one (:func:`mark_lost`) alike."""
    return x >= l0 and slow >= l0 and start_tells(f, i, l0)


def raise_alert(d: DivergenceDetector, f: Features, i: int, x: float, best: float, ratio: float,
                rule: tuple[str, str]) -> None:
    """Open the episode for ``rule`` = (why, rule name), fired on row ``i`` at loss ``x``."""
    step = f.step[i]
    bstep = f.best_step[i]
    # the words use the lowest loss the run really held (the raw best) when it is lower than
    # the EMA level's best: after a fast descent the level is still far above the real values
    shown, shown_step = (f.rbest[i], f.rbest_step[i]) if f.rbest[i] < best else (best, bstep)
    shown_ratio = _ratio(x, shown)
    far = above_best(x, shown)
    warm = lr_ramping(f, i)
    l0 = f.l0[i]
    lost = rule[1] in LOST_RULES or (rule[1] not in UNSTABLE_RULES and undone(f, i, x, l0, f.slow[i]))
    tells = start_tells(f, i, l0)
    if rule[1] == "lost":
        msg = f"run lost at step {step}: {rule[0]}"
    elif lost:
        msg = (f"loss diverging: {fmt(x)} at step {step} is {far} "
               f"({fmt(shown)} at step {shown_step}) and {rule[0]}")
    else:
        why_not = (f"it is still below {start_words(f, i)}: the run is not lost" if x < l0 else
                   "one record after a jump does not show whether the run is lost" if tells else
                   "its first loss is at or below zero, which does not show whether the run is lost"
                   if l0 <= 0.0 else
                   "the log begins after training began, so its first loss does not show "
                   "whether the run is lost")
        msg = (f"LR too high, the loss is unstable: {fmt(x)} at step {step} is "
               f"{far} ({fmt(shown)} at step {shown_step}) and {rule[0]}; "
               f"{why_not}")
    if lost:
        reason = (f"The loss is running away ({far}). Cut the LR "
                  f"{fmt(1 / d.factor)}x (x{fmt(d.factor)}); if it does not come back within "
                  f"a few hundred steps, roll back to a checkpoint near step {shown_step}.")
    elif x < l0:
        reason = (f"The LR is too high for this run: the loss jumps back up ({far}) "
                  f"but still holds part of its progress. Cut the LR "
                  f"{fmt(1 / d.factor)}x (x{fmt(d.factor)}) and let the run go on; no "
                  f"need to stop it.")
        if tells:
            reason += (f" If the loss and its level climb back to {start_words(f, i)}, roll back "
                       f"to a checkpoint near step {shown_step}.")
    elif not tells:
        # an excerpt or a first loss <= 0 (:func:`start_tells`): above it is not a lost run
        reason = (f"The LR is too high for this run: the loss is running away ({far}), above "
                  f"{start_words(f, i)}. Cut the LR {fmt(1 / d.factor)}x (x{fmt(d.factor)}) now; "
                  f"if it does not come back within a few hundred steps, roll back to a "
                  f"checkpoint near step {shown_step}.")
    else:
        # already above the start level: one record after a jump (spike_climbs) cannot tell a
        # long excursion from a lost run; the level joining the loss there decides (mark_lost)
        reason = (f"The LR is too high for this run: the loss jumped and rose again, to "
                  f"{far} and above {start_words(f, i)}. Cut the LR "
                  f"{fmt(1 / d.factor)}x (x{fmt(d.factor)}) now. If the loss does not come back "
                  f"below it before its level (the running average) climbs past it too, "
                  f"the run is lost: roll back to a checkpoint near step {shown_step}.")
    if warm:
        reason += WARM_UP
    # raised_* and rollback_step: what the raising words quoted (the rules and escalation update loss and ratio)
    ev: dict[str, Any] = {"loss": x, "best": best, "best_step": bstep, "ratio": ratio,
                          "rule": rule[1], "raised_ratio": shown_ratio, "raised_above_start": x >= l0,
                          "rollback_step": shown_step, "raised_best": shown}
    if f.gok[i]:
        ev["grad_norm"] = f.gn[i]
    if f.lrok[i]:
        ev["lr"] = f.lr[i]
    escalation.arm(d, f, i)
    d.open_episode(step, "critical" if lost else "warning", msg, ev,
                   Action("scale_lr", {"factor": d.factor}, reason))


def raise_val_alert(d: DivergenceDetector, f: Features, i: int, rule: tuple[str, str]) -> None:
    """Open the episode for :mod:`.val_blowup` on row ``i`` (no training loss: the words and the
    evidence are the validation loss's). Critical: the held-out loss has lost most of what was
    learnt."""
    step = f.step[i]
    what = ("The validation loss and the grad-norm blew up together" if rule[1] == "val_blowup" else
            "The validation loss jumped above where it started")
    reason = (f"{what}: the updates moved the weights away. Cut the LR {fmt(1 / d.factor)}x "
              f"(x{fmt(d.factor)}) and restart from the checkpoint of the best validation loss ({fmt(f.vbest[i])}).")
    ev: dict[str, Any] = {"val_loss": f.val[i], "best_val_loss": f.vbest[i], "rule": rule[1]}
    if f.gok[i]:
        ev["grad_norm"] = f.gn[i]
    if f.lrok[i]:
        ev["lr"] = f.lr[i]
    escalation.arm(d, f, i)
    d.open_episode(step, "critical", rule[0], ev, Action("scale_lr", {"factor": d.factor}, reason))


def mark_lost(d: DivergenceDetector, f: Features, i: int, x: float, best: float, l0: float,
              slow: float) -> None:
    """While an episode is open: an unstable run (a warning) whose loss and level are at or above
    its start level has undone every bit of progress (:func:`undone`): the run is lost (critical,
    same episode and action, its reason now the roll-back)."""
    a = d.alert
    if a is None or a.severity == "critical" or not undone(f, i, x, l0, slow):
        return
    ev = {**a.evidence, "loss": x, "lost_step": f.step[i]}
    # alerts raised before the raise-time figures were kept: the loss then is the best guess
    raised_ratio = a.evidence.get("raised_ratio", a.evidence["ratio"])
    raised_best = a.evidence.get("raised_best", 1.0)  # states saved before it: a positive best
    above = a.evidence.get("raised_above_start", a.evidence["loss"] >= l0)
    where = "has stayed above" if above else "is back above"
    msg = (f"loss diverging: {fmt(x)} at step {f.step[i]} {where} {start_words(f, i)}, and its "
           f"level ({fmt(slow)}) has reached it too; it was {far_words(raised_ratio, raised_best)} when the alert was "
           f"raised at step {a.step}")
    good = ev.get("rollback_step", ev["best_step"])
    reason = (f"The loss and its level are above where the run started: everything it learnt is "
              f"undone. Cut the LR {fmt(1 / d.factor)}x (x{fmt(d.factor)}) and roll back to a "
              f"checkpoint near step {good}, before the trouble began.")
    if lr_ramping(f, i):
        reason += WARM_UP
    d.update_episode(f.step[i], severity="critical", message=msg, evidence=ev,
                     action=Action(a.action.type, dict(a.action.params), reason))


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    """While an episode is open: the rows where a warning may turn critical."""
    if d.alert is None or d.alert.severity == "critical":
        return np.zeros(f.n, dtype=bool)
    l0 = f.a("l0")
    return f.a("lok") & (l0 > 0.0) & ~(f.a("loss") < l0) & ~(f.a("slow") < l0)
