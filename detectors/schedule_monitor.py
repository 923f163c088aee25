"""Schedule monitor: is the LR the run reports the LR its declared schedule says?

The run's metadata declares its schedule (``meta["lr_schedule"]``, see ``schedules.py``); this
detector compares every reported LR with ``schedule.lr_at(step)`` and, when they part, says what
most likely went wrong, in this order of diagnosis:

* **warmup missing** - during the declared warmup the LR is already at (or near) the post-warmup
  level. Action: add_warmup.
* **stuck** - the reported LR has not changed since the run started while the schedule has:
  ``scheduler.step()`` is never called (or the LR is overwritten each step).
* **stepped per epoch instead of per step** (or the reverse) - the reported LR equals the
  schedule evaluated at ``step // k``: the scheduler is called once every k steps. k is estimated
  from the first change of the reported LR against the first change of the declared one.
* **wrong peak** - the reported LR is a constant multiple c of the declared one (an LR set in
  the optimizer that differs from the one declared, a forgotten batch-size scaling). Action:
  scale_lr by 1/c.
* otherwise: the two values and their ratio.

Rules and defaults
------------------
A step matches when the reported LR is within ``rel_tol`` (1%) of the declared LR at step, step-1
or step+1 (loops log the LR before or after ``scheduler.step()``; float32 LRs round at 1e-7). An
episode opens after ``patience`` (5) consecutive mismatching steps with an LR - one odd value is
not a schedule bug - and resolves after ``recover`` (20) consecutive matching steps. One alert
per episode; it is updated only when the diagnosis changes. Severity warning: a schedule that is
not the declared one is a configuration bug, not an emergency. O(1) time and state per step.

If the declared schedule cannot be read, the monitor raises one ``info`` alert saying why and
stays quiet afterwards.

Examples
--------
>>> m = ScheduleMonitor(schedule={"name": "warmup_cosine", "lr": 1e-3, "warmup_steps": 100,
...                                "total_steps": 1000})
>>> for s in range(10):
...     m.observe(s, 1e-3)          # warmup forgotten: full LR from step 0
>>> m.alert.message.split(":")[0]
'warmup missing'
>>> m.alert.action.type
'add_warmup'
"""

from __future__ import annotations

import math
from typing import Any

from .base import Detector, fmt
from .schedules import PerEpoch, Schedule, build_schedule
from .types import Action


class ScheduleMonitor(Detector):
    """Compare the reported LR with the declared schedule; explain a mismatch (see module doc).

    Parameters
    ----------
    schedule : dict
        The declaration, ``{"name": ..., **params}`` (run meta ``"lr_schedule"``).
    rel_tol : float
        Relative tolerance of a match (default 0.01).
    patience : int
        Consecutive mismatching steps before an alert (default 5).
    recover : int
        Consecutive matching steps that resolve the alert (default 20).
    """

    name = "schedule_monitor"
    judges_descent = False  # a fact whatever the loss means (objective.py)
    kind = "lr_anomaly"

    def __init__(self, schedule: dict[str, Any] | None = None, rel_tol: float = 0.01, patience: int = 5,
                 recover: int = 20) -> None:
        super().__init__(schedule=schedule, rel_tol=rel_tol, patience=patience, recover=recover)
        self.rel_tol = float(rel_tol)
        self.patience = int(patience)
        self.recover = int(recover)
        self.sched: Schedule | None = None
        self.spec_error: str | None = None
        try:
            self.sched = build_schedule(schedule)  # type: ignore[arg-type]
        except ValueError as e:
            self.spec_error = str(e)
        self._first_change_cache: int | None | bool = False  # computed on first need (False = not yet)
        self._reset_state()

    def _reset_state(self) -> None:
        self.first_step: int | None = None
        self.first_lr: float | None = None
        self.last_lr: float | None = None
        self.n_changes = 0
        self.first_change_step: int | None = None
        self.miss_streak = 0
        self.match_streak = 0
        # log(reported / declared) bounds over the current mismatch streak, for each logging
        # offset (declared at step, step-1, step+1): a constant ratio at one of them is a wrong peak
        self.min_logratio = [math.inf, math.inf, math.inf]
        self.max_logratio = [-math.inf, -math.inf, -math.inf]
        self.diagnosis: str | None = None
        self.spec_reported = False

    @classmethod
    def from_meta(cls, meta: dict[str, Any], **params: Any) -> "ScheduleMonitor | None":
        spec = (meta or {}).get("lr_schedule")
        if spec is None:
            return None
        return cls(**{**params, "schedule": spec})

    # -- the rule -------------------------------------------------------------------------------
    def _declared_first_change(self) -> int | None:
        """First step at which the declared LR differs from its step-0 value (bounded search)."""
        s = self.sched
        assert s is not None
        lr0 = s.lr_at(0)
        for k in range(1, 100_000):
            # strict, not rel_tol: a cosine moves by 1e-5 on its first step, and that first
            # (tiny) move is what one scheduler call does
            if abs(s.lr_at(k) - lr0) > 1e-12 * max(abs(lr0), 1e-300):
                return k
        return None

    def _close(self, a: float, b: float) -> bool:
        scale = max(abs(a), abs(b))
        return abs(a - b) <= self.rel_tol * scale or scale == 0.0

    def _matches(self, step: int, lr: float) -> bool:
        s = self.sched
        assert s is not None
        return any(self._close(lr, s.lr_at(k)) for k in (step, step - 1, step + 1) if k >= 0)

    def screen(self, f: Any):  # noqa: ANN201
        # every row with a finite LR: a match moves the streaks too, so no row with an LR may
        # be skipped; rows without one are no-ops in step()
        return f.a("lrok") if self.sched is not None else None

    def active_screen(self, f: Any):  # noqa: ANN201
        return self.screen(f)

    def step(self, f: Any, i: int) -> None:
        lr = f.lr[i]
        if lr != lr:  # not logged, or NaN
            if self.sched is None and not self.spec_reported:
                self.observe(int(f.step[i]), math.nan)  # report the unreadable declaration once
            return
        self.observe(int(f.step[i]), float(lr))

    def observe(self, step: int, lr: float) -> None:
        """Take one reported (step, LR); open, update or close the episode."""
        if self.sched is None:
            if not self.spec_reported:
                self.spec_reported = True
                self.open_episode(step, "info", f"declared lr_schedule cannot be checked: {self.spec_error}",
                                  {"error": self.spec_error}, Action("none", {}, "fix the run's lr_schedule metadata"))
            return
        if not math.isfinite(lr):
            return  # a NaN/inf LR is the nan detector's business, not a schedule mismatch
        if self.first_step is None:
            self.first_step, self.first_lr = step, lr
        elif self.last_lr is not None and not math.isclose(lr, self.last_lr, rel_tol=1e-6, abs_tol=0.0):
            self.n_changes += 1
            if self.first_change_step is None:
                self.first_change_step = step
        self.last_lr = lr

        if self._matches(step, lr):
            self.miss_streak = 0
            self.min_logratio = [math.inf, math.inf, math.inf]
            self.max_logratio = [-math.inf, -math.inf, -math.inf]
            self.match_streak += 1
            if self.alert is not None and self.match_streak >= self.recover:
                self.close_episode(step, f"reported LR matched the declared schedule for {self.recover} steps")
                self.diagnosis = None
            return
        self.match_streak = 0
        self.miss_streak += 1
        expected = self.sched.lr_at(step)
        for j, k in enumerate((step, step - 1, step + 1)):
            e = self.sched.lr_at(k) if k >= 0 else 0.0
            if e > 0 and lr > 0:
                lg = math.log(lr) - math.log(e)  # lr / e may leave the float range; the logs cannot
                self.min_logratio[j] = min(self.min_logratio[j], lg)
                self.max_logratio[j] = max(self.max_logratio[j], lg)
            else:  # a zero on one side: no constant ratio at this offset
                self.min_logratio[j], self.max_logratio[j] = -math.inf, math.inf
        if self.miss_streak < self.patience:
            return
        diagnosis, message, action = self._diagnose(step, lr, expected)
        evidence = {"reported_lr": lr, "declared_lr": expected, "schedule": self.sched.to_spec(),
                    "diagnosis": diagnosis, "mismatched_steps": self.miss_streak}
        if self.alert is None:
            self.diagnosis = diagnosis
            self.open_episode(step, "warning", message, evidence, action)
        elif diagnosis != self.diagnosis:
            self.diagnosis = diagnosis
            self.update_episode(step, message=message, evidence=evidence, action=action)

    def _diagnose(self, step: int, lr: float, expected: float) -> tuple[str, str, Action]:
        s = self.sched
        assert s is not None
        w = s.warmup_steps
        head = f"at step {step} the LR is {fmt(lr)} but the declared {s.name} schedule says {fmt(expected)}"
        # warmup missing: inside the warmup, already at the post-warmup level
        if w > 0 and step < w and lr >= 0.9 * s.lr_at(w):
            return ("warmup_missing",
                    f"warmup missing: {head}; the declared schedule warms up over {w} steps from "
                    f"{fmt(s.lr_at(0))} to {fmt(s.peak_lr)}, the run started at full LR",
                    Action("add_warmup", {"steps": int(w)},
                           f"the run skips its declared {w}-step warmup; a full LR from step 0 is the classic "
                           f"cause of early divergence"))
        declared_moved = self.first_step is not None and not self._close(s.lr_at(self.first_step), expected)
        if self.n_changes == 0 and declared_moved:
            return ("stuck",
                    f"LR stuck: {head}; the reported LR has stayed at {fmt(self.first_lr or lr)} since step "
                    f"{self.first_step} while the schedule moved: is scheduler.step() called?",
                    Action("none", {}, "call scheduler.step() once per optimizer step (or stop overwriting the LR)"))
        k = self._estimated_interval(step)
        if k and k > 1 and self._close(lr, s.lr_at(step // k)):
            return ("per_epoch",
                    f"stepped per epoch instead of per step: {head}; the reported LR is the schedule at "
                    f"step // {k}, i.e. scheduler.step() runs once every {k} steps",
                    Action("none", {}, f"call scheduler.step() after every optimizer step, not once every {k} "
                                       f"(or declare interval 'epoch' with steps_per_epoch {k})"))
        if isinstance(s, PerEpoch) and self._close(lr, s.inner.lr_at(step)):
            return ("per_step",
                    f"stepped per step instead of per epoch: {head}; the reported LR is the per-epoch schedule "
                    f"advanced on every step ({s.steps_per_epoch} steps per epoch declared)",
                    Action("none", {}, "call scheduler.step() once per epoch, as declared"))
        spans = [hi - lo if math.isfinite(hi) and math.isfinite(lo) else math.inf
                 for lo, hi in zip(self.min_logratio, self.max_logratio)]
        j = min(range(3), key=spans.__getitem__)
        mid = 0.5 * (self.min_logratio[j] + self.max_logratio[j])
        # a ratio beyond e**700 is no peak anyone set (and 1 / c would leave the float range)
        if spans[j] <= 2 * self.rel_tol and abs(mid) < 700:
            c = math.exp(mid)
            return ("wrong_peak",
                    f"wrong peak: {head}; for {self.miss_streak} steps the LR has been {c:.3g}x the declared "
                    f"schedule, so its peak is {fmt(c * s.peak_lr)} instead of {fmt(s.peak_lr)}",
                    Action("scale_lr", {"factor": 1.0 / c},
                           f"the LR is {c:.3g}x what was declared; scale it by {1 / c:.3g} to follow the declared "
                           f"schedule (or fix the declaration if the run is right)"))
        ratio = lr / expected if expected else math.inf
        return ("mismatch",
                f"LR does not follow its schedule: {head} ({ratio:.3g}x) for {self.miss_streak} steps",
                Action("none", {}, "check how the scheduler is built and stepped against the declared lr_schedule"))

    def _estimated_interval(self, step: int) -> int | None:
        """Steps per scheduler call: first reported change vs first declared change."""
        if self.first_change_step is None or self.first_step is None:
            return None
        if self._first_change_cache is False:
            # lazily: the engine rebuilds detectors from state for every batch, and a constant
            # schedule costs a full bounded search; only a mismatch diagnosis needs it
            self._first_change_cache = self._declared_first_change()
        first = self._first_change_cache
        if not first:
            return None
        return max(1, round((self.first_change_step - self.first_step) / first))

    # -- state ----------------------------------------------------------------------------------
    _STATE = ("first_step", "first_lr", "last_lr", "n_changes", "first_change_step", "miss_streak",
              "match_streak", "min_logratio", "max_logratio", "diagnosis", "spec_reported")

    def get_state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._STATE}

    def set_state(self, d: dict[str, Any]) -> None:
        for k in self._STATE:
            if k in d:
                setattr(self, k, d[k])
