"""NaN / infinity in the loss, the grad-norm or the validation loss."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Detector, fmt
from .nan_rule import GN_PATIENCE, GRAD_NORM, LOSS, LOSS_JUMP, RECOVER, VAL_LOSS, ZERO_LOSS, classify
from .types import Action


class NaNDetector(Detector):
    """A non-finite loss, grad-norm or validation loss, judged by the one NaN rule of losswatch
    (:mod:`losswatch.detectors.nan_rule`, which the client's in-process check calls too).

    Rule
    ----
    * loss logged as NaN/inf -> **critical** at once. Action: roll back to the last step with a
      finite loss (the weights after a NaN are garbage; Keras #4848/#8332 users ask exactly this),
      or stop if there never was one.
    * grad-norm NaN/inf while the loss is finite:

      - isolated -> **warning** on the very record, action ``none``: with fp16 and a dynamic loss
        scaler an overflowing step is skipped and the scale halved, routinely (BLOOM's Megatron
        logs show it; Hugging Face logs ``grad_norm: nan`` for such a step);
      - ``gn_patience`` in a row -> **critical** (the scaler cannot recover: the run trains on
        garbage), action: roll back to before the first of them and lower the LR or train in bf16;
      - with a loss of exactly 0.0 -> **critical** at once: no real loss is exactly 0 while its
        gradient is NaN (a broken forward pass, e.g. an fp16 overflow inside the model that the
        loss masks out; a common Hugging Face fine-tuning report);
      - the first of a run of them, beside a loss ``nan_rule.JUMP`` (10) x or more every loss
        logged before it -> **critical** at once, action: roll back to the last finite loss
        before it and lower the LR: a loss scaler's overflow leaves the loss where it was (0.9-1.6x
        the loss before it in the tune part's fp16 logs); a loss 10x above anything the run ever
        logged was computed by weights that had already blown up.

      A warning escalates (same alert) when a later record meets a critical condition.
    * validation loss NaN/inf with a finite (or no) training loss -> **warning** on the very
      record, action ``none``, repeated or not: the training still computes finite losses, so
      what is known broken is the evaluation (an fp16/AMP evaluation overflowing during the
      warm-up: Ultralytics YOLO fine-tunes log ``nan`` validation losses for their first epochs
      and then train on normally; or a validation split or loss that cannot be computed: a
      graph-network run whose validation loss was NaN every epoch), and with it early stopping
      and best-checkpoint selection. Beside a training loss of exactly 0.0 -> **critical**, as
      with a NaN grad-norm (the outputs are not finite, the 0 is no real loss): nothing marks
      when the 0s began, so the action is to stop (no rollback point).
    * The episode re-arms after ``recover`` consecutive records without a non-finite value, the
      last with a finite loss (or, in a log without one, a finite validation loss), and not while
      the last validation loss logged was non-finite: evaluations are far sparser than training
      records, so a warning lasts until one comes back finite instead of re-opening at each.

    Parameters
    ----------
    gn_patience : int, default 3
    recover : int, default 5
    ran_away : float, default 2.0
        When the last finite loss was more than this many times the run's best (smoothed) level,
        the rollback goes to the step of that best level, not to the last finite step: a run that
        diverged and then overflowed has no usable weights since it left its best.

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> _ = eng.update(Record(step=1, loss=2.0))
    >>> [a.message.split(" (")[0] for a in eng.update(Record(step=2, loss=float("nan")))]
    ['loss is NaN at step 2']

    References
    ----------
    Keras issues #4848, #8332 (stop / restore on NaN); Lightning EarlyStopping(check_finite).
    """

    name = "nan"
    judges_descent = False  # a fact whatever the loss means (objective.py)
    kind = "nan"
    static_screen = True

    def __init__(self, gn_patience: int = GN_PATIENCE, recover: int = RECOVER, ran_away: float = 2.0) -> None:
        super().__init__(gn_patience=gn_patience, recover=recover, ran_away=ran_away)
        self.last_bad_rec = -(10**9)  # record ordinal of the last non-finite value
        self.gbad_start = 0  # grad-norm record count at which the current run of bad gn began
        self.gbad_last = -(10**9)
        self.gbad_step = -1  # step of the first record of the current run of bad grad-norms
        # the last validation loss logged was NaN/inf. Only set inside an episode (every row is
        # stepped then); an idle detector skips finite rows, and it is False whenever idle
        self.val_bad = False

    def get_state(self) -> dict[str, Any]:
        return {"last_bad_rec": self.last_bad_rec, "gbad_start": self.gbad_start,
                "gbad_last": self.gbad_last, "gbad_step": self.gbad_step, "val_bad": self.val_bad}

    def set_state(self, d: dict[str, Any]) -> None:
        self.last_bad_rec = d["last_bad_rec"]
        self.gbad_start = d["gbad_start"]
        self.gbad_last = d["gbad_last"]
        self.gbad_step = d.get("gbad_step", -1)
        self.val_bad = d.get("val_bad", False)

    def screen(self, f):
        loss_bad = f.a("has_loss") & ~f.a("lok")
        gn = f.a("gn")
        with np.errstate(invalid="ignore"):
            gn_bad = f.a("has_gn") & ~np.isfinite(gn)
        return loss_bad | gn_bad | (f.a("has_val") & ~f.a("vok"))

    def step(self, f, i: int) -> None:
        vbad = f.has_val[i] and not f.vok[i]
        if self.alert is None and (f.lok[i] or not f.has_loss[i]) and (f.gok[i] or not f.has_gn[i]) \
                and not vbad:
            return  # finite (or absent) loss, grad-norm and validation loss: nothing to do
        lbad = f.has_loss[i] and not f.lok[i]
        g = f.gn[i]
        gbad = f.has_gn[i] and g - g != 0.0
        rec = f.rec[i]
        if lbad or gbad or vbad:
            self.last_bad_rec = rec
        if f.has_val[i]:
            self.val_bad = vbad
        if gbad:
            if self.gbad_last != rec - 1:
                self.gbad_start = rec
                self.gbad_step = f.step[i]
            self.gbad_last = rec
        step = f.step[i]
        verdict = classify(f.loss[i] if f.has_loss[i] else None, gbad,
                           rec - self.gbad_start + 1 if gbad else 0, self.gn_patience, vbad,
                           f.b_top[i])
        if verdict is not None:
            what = verdict.signal
            value = f.loss[i] if lbad else (g if gbad else f.val[i])
        if self.alert is None:
            if verdict is not None:
                msg, ev, act = self._describe(f, i, what, value)
                self.open_episode(step, verdict.severity, msg, ev, act)
            return
        if verdict is not None and verdict.severity == "critical" and self.alert.severity != "critical":
            msg, ev, act = self._describe(f, i, what, value)
            self.update_episode(step, severity="critical", message=msg, evidence=ev, action=act)
        elif not lbad and not gbad and not self.val_bad and (f.lok[i] or not f.has_loss[i] and f.vok[i]) \
                and rec - self.last_bad_rec >= self.recover:
            self.close_episode(step, f"finite values for {self.recover} records")

    def _describe(self, f, i: int, what: str, value: float):
        step = f.step[i]
        nl = f.nl[i]
        last_ok = f.lstep[i]
        ev: dict[str, Any] = {"signal": what, "value": value, "step": step}
        if nl > 0:
            ev.update(last_finite_step=last_ok, last_finite_loss=f.lprev[i])
            where = f" (last finite loss {fmt(f.lprev[i])} at step {last_ok})"
        else:
            where = " (no finite loss yet)"
        msg = f"{what} is {fmt(value)} at step {step}{where}"
        if what == LOSS:
            best, best_step = f.best[i], f.best_step[i]
            if nl > 0 and best_step >= 0 and 0.0 < best < f.lprev[i] / self.ran_away:
                # The run had already blown up before it overflowed: the last finite weights are
                # as useless as the NaN ones. The healthy state is where the loss level was best.
                ev.update(rollback_reason="ran_away", best_level=best, best_step=best_step)
                act = Action("rollback", {"to_step": best_step},
                             f"The loss became {fmt(value)} after running away (last finite "
                             f"{fmt(f.lprev[i])}, {fmt(f.lprev[i] / best)}x its best level {fmt(best)} "
                             f"at step {best_step}): the weights since then are not usable. Roll back to "
                             f"your last checkpoint at or before step {best_step}, then restart with a "
                             "lower LR.")
            elif nl > 0:
                act = Action("rollback", {"to_step": last_ok},
                             f"The loss became {fmt(value)}: the weights are no longer usable. Roll back "
                             f"to your last checkpoint at or before step {last_ok}, then restart with "
                             "a lower LR (or skip the offending batches).")
            else:
                act = Action("stop", {}, f"The loss is {fmt(value)} from the start: there is nothing "
                             "to roll back to. Stop and check the data, the loss function and the "
                             "initialisation.")
        elif what == GRAD_NORM:
            act = Action("none", {}, f"One step with a grad-norm of {fmt(value)} and a finite loss: with "
                         "fp16 a dynamic loss scaler skips such a step and lowers its scale, routinely. "
                         "Nothing to do unless it repeats.")
        elif what == VAL_LOSS:
            train = f"training loss {fmt(f.loss[i])}" if f.lok[i] else "no training loss on this record"
            msg = f"validation loss is {fmt(value)} at step {step} ({train})"
            act = Action("none", {}, f"The validation loss is {fmt(value)} while training computes finite "
                         "losses, so the weights are not known to be broken: the evaluation is. An fp16/AMP "
                         "evaluation overflowing (common in the first epochs, during the warm-up), or a "
                         "validation split or loss that cannot be computed (empty, labels out of range, "
                         "a log of 0). Early stopping and best-checkpoint selection on the validation loss "
                         "are blind while it lasts: check the evaluation's precision and the validation data.")
        elif what == LOSS_JUMP:
            top, before, at = f.b_top[i], f.b_lprev[i], int(f.b_lstep[i])
            ev.update(loss=f.loss[i], highest_loss_before=top, last_finite_step=at, last_finite_loss=before)
            msg = (f"grad-norm is {fmt(value)} at step {step} with the loss at {fmt(f.loss[i])}, "
                   f"{fmt(f.loss[i] / top)}x the highest loss logged before it ({fmt(top)}; the last, "
                   f"{fmt(before)} at step {at})")
            act = Action("rollback", {"to_step": at},
                         f"The loss is {fmt(f.loss[i] / top)}x anything the run logged before, beside a "
                         "non-finite gradient: a loss scaler's overflow leaves the loss where it was, so "
                         f"the weights themselves blew up after step {at}. Roll back to your last "
                         f"checkpoint at or before step {at}, then restart with a lower LR.")
        elif what == ZERO_LOSS and not (f.has_gn[i] and f.gn[i] - f.gn[i] != 0.0):
            msg = f"loss is exactly 0 with a validation loss of {fmt(value)} at step {step}"
            act = Action("stop", {}, f"A training loss of exactly 0 beside a validation loss of {fmt(value)} "
                         "is not a real loss: the model's outputs are not finite and the training loss is "
                         "masked or overflowed (fp16). Stop, and restart from the last checkpoint before the "
                         "training loss first read 0, with a lower LR or in bf16.")
        else:
            first = self.gbad_step
            to = first - 1 if first > 0 else 0
            ev.update(first_bad_step=first)
            if what == ZERO_LOSS:
                msg = f"loss is exactly 0 with a grad-norm of {fmt(value)} at step {step}"
                why = ("A loss of exactly 0 with a NaN gradient is not a real loss: the forward pass "
                       "overflowed (fp16) or the batch was masked out entirely.")
            else:
                n = f.rec[i] - self.gbad_start + 1
                msg = f"grad-norm is {fmt(value)} for {n} records in a row at step {step}"
                why = (f"The grad-norm has been {fmt(value)} for {n} logged records in a row: the "
                       "loss scaler is not recovering and the updates are garbage.")
            act = Action("rollback", {"to_step": to},
                         f"{why} Roll back to your last checkpoint at or before step {to}, then "
                         "lower the LR or train in bf16; check the data of those steps.")
        return msg, ev, act

