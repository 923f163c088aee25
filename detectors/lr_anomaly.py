"""LR anomalies: a zero LR while training, a >10x jump in one step, a non-finite/negative LR."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Detector, fmt
from .types import Action

#: largest gap (steps) the per-step rate is taken over: jump ** MAX_GAP stays a finite float
MAX_GAP = 300


class LRAnomalyDetector(Detector):
    """The LR itself is wrong.

    * LR NaN/inf or negative -> **critical** at once (the optimizer is corrupt).
    * LR practically 0 (0, <= ``zero_frac`` x its peak, or <= ``floor`` whatever the peak) ->
      **warning**, action ``scale_lr``
      up: nothing is training. When it *dropped* there (the LR before was > ``sudden_frac`` x
      peak): after ``zero_patience`` records. When it *decayed* there smoothly, that is the end of
      a schedule (cosine touches 0 on its last step; llm.c's log prints 0.000000 for its last
      2%): only once it has lasted ``long_frac`` of the run's LR records (a schedule that ends
      far too early, or a per-epoch scheduler stepped per batch). Not at all when the first LR
      in that band is a positive floor it holds exactly on every record since: that is the
      floor the user set (Keras' ReduceLROnPlateau from Adam's 1e-3 down to the common
      ``min_lr=1e-6`` ends at exactly ``zero_frac`` x its peak). A floor reached by steps
      *through* the band is not told apart from a step decay stepped per batch, which keeps
      stepping down the same way (the benchmark's schedule bugs): both are judged as a decay.
      Never positive: after ``start_patience`` records (a warm-up from 0 starts at 0 for one
      step).
    * LR up more than ``jump`` x per step -> **warning**, action ``scale_lr`` back to the
      previous value; unless the jump returns to (at most) the run's earlier peak: that is a warm
      restart (SGDR) or a new cycle, healthy by design. A 10x *drop* is a step decay
      (MultiStepLR gamma=0.1), also healthy. The rate is per step across the gap between two
      logged LRs: a warm-up logged every 50 steps rises 44x between two rows, ~1.08x per step.

    Episodes: a zero/non-finite LR resolves once the LR is positive and finite again; a jump
    resolves when the LR is back within 2x of its pre-jump value or after ``jump_hold`` LR records
    (the run survived it: the new LR is evidently intended).

    Parameters
    ----------
    jump : float, default 10.0
    zero_patience : int, default 3
    start_patience : int, default 100
    jump_hold : int, default 100
    zero_frac : float, default 1e-3
    floor : float, default 1e-16
        An LR at or below this is practically 0 whatever the run's peak, so a log that begins
        after its schedule decayed there (an excerpt of epochs 455-459 whose LR, cut 0.9x per
        epoch, prints 1.7e-24 -> 1.2e-24 while the test loss repeats to eight digits) is judged
        as one that shows the decay. An Adam step moves each weight by about the LR, which a
        float32 weight above 1e-8 cannot register (its resolution is 6e-8 of its magnitude); an
        SGD step would need gradients ~1e7 times a weight of 0.01 to. Schedules that train sit
        far above it: the smallest positive LRs of the benchmark's runs and of the tune part's
        logs are 8e-10-1e-9 at the tails of their decays, 3.5e-11-5.9e-11 on a linear or
        cosine decay's last logged step before 0, while a scheduler run past its end keeps going
        down, to 1e-20-1e-25 (the benchmark's step decays stepped per batch, the excerpt above).
        The advice is the direction only (``restore_factor``'s x10, as for an LR of exactly 0):
        no factor the acting layer would apply brings such an LR back; the schedule's base LR
        does.
    sudden_frac : float, default 0.01
    long_frac : float, default 0.1

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> lrs = [1e-3, 1e-3, 1e-3, 2e-2]
    >>> out = [a for s, lr in enumerate(lrs) for a in eng.update(Record(s, 2.0, lr=lr))]
    >>> [(a.kind, a.step, a.action.type, a.action.params) for a in out]
    [('lr_anomaly', 3, 'scale_lr', {'factor': 0.05})]

    References
    ----------
    trainpulse (LR change > 10x in one step); torch.optim.lr_scheduler (SGDR restarts, step decay).
    """

    name = "lr_anomaly"
    judges_descent = False  # a fact whatever the loss means (objective.py)
    kind = "lr_anomaly"
    static_screen = True

    def __init__(self, jump: float = 10.0, zero_patience: int = 3, start_patience: int = 100,
                 jump_hold: int = 100, zero_frac: float = 1e-3, sudden_frac: float = 0.01,
                 long_frac: float = 0.1, floor: float = 1e-16) -> None:
        super().__init__(jump=jump, zero_patience=zero_patience, start_patience=start_patience,
                         jump_hold=jump_hold, zero_frac=zero_frac, sudden_frac=sudden_frac,
                         long_frac=long_frac, floor=floor)
        self.pre_zero = 0.0  # LR just before the current run of ~zero LRs
        self.zero_start = 0  # LR-record count where the current run of zero LRs began
        self.zero_last = -1
        self.zero_floor = -1.0  # the LR held on every record of that run (-1: it moved, or was 0)
        self.mode = ""  # what the active episode is about: "bad", "zero", "jump"
        self.ref = 0.0  # pre-jump LR
        self.opened_at = 0  # LR-record count at which the episode opened

    def get_state(self) -> dict[str, Any]:
        return {"zero_start": self.zero_start, "zero_last": self.zero_last, "pre_zero": self.pre_zero,
                "zero_floor": self.zero_floor, "mode": self.mode,
                "ref": self.ref, "opened_at": self.opened_at}

    def set_state(self, d: dict[str, Any]) -> None:
        self.zero_start, self.zero_last, self.pre_zero = d["zero_start"], d["zero_last"], d["pre_zero"]
        self.zero_floor = d.get("zero_floor", -1.0)  # absent in older states: no floor is known
        self.mode, self.ref, self.opened_at = d["mode"], d["ref"], d["opened_at"]

    def screen(self, f):
        with np.errstate(all="ignore"):
            lr = f.a("lr")
            prev = f.a("b_lrlast")
            near_zero = ~(lr > self._zero_bars(f.a("peak")))
            gap = np.clip(f.a("step") - f.a("b_lrstep"), 1, MAX_GAP)
            return f.a("has_lr") & (~f.a("lrok") | ~(lr > 0.0) | near_zero |
                                    ~(lr <= self.jump ** gap * prev * 1.0000001))

    def active_screen(self, f):
        lr, ok = f.a("lr"), f.a("lrok")
        with np.errstate(invalid="ignore"):
            if self.mode == "bad":
                rows = ok & ~(lr < 0.0)
            elif self.mode == "zero":
                rows = ok & ~(lr <= self._zero_bars(f.a("peak")))
            elif self.mode == "jump":
                rows = (ok & ~(lr > 2.0 * self.ref)) | \
                    (f.a("nlr") - self.opened_at >= self.jump_hold)
            else:
                rows = np.ones(f.n, dtype=bool)
        return f.a("has_lr") & rows

    def step(self, f, i: int) -> None:
        if not f.has_lr[i]:
            return
        lr = f.lr[i]
        ok = f.lrok[i]
        gap = f.step[i] - f.b_lrstep[i] if f.b_lrstep[i] >= 0 else 1
        allowed = self.jump ** (gap if gap < MAX_GAP else MAX_GAP)  # a rate per step across the gap
        if self.alert is None and ok and lr > 0.0 and lr > self._zero_bar(f.peak[i]) and \
                not lr > allowed * f.b_lrlast[i]:
            return  # a positive LR, not ~0, no jump: nothing to look at
        step = f.step[i]
        nlr = f.nlr[i]  # counts finite LRs only
        if self.alert is not None:
            self._maybe_resolve(f, i, lr, ok, nlr)
            return
        if not ok or lr < 0.0:
            self.mode = "bad"
            self.open_episode(step, "critical", f"LR is {fmt(lr)} at step {step}",
                              {"lr": lr}, Action("stop", {}, f"The learning rate is {fmt(lr)}: the "
                                                 "optimizer or scheduler state is corrupt. Stop and "
                                                 "fix the LR schedule before resuming."))
            return
        peak = f.peak[i]
        if lr <= self._zero_bar(peak):
            if self.zero_last != nlr - 1:
                self.zero_start = nlr
                self.pre_zero = f.b_lrlast[i]
                self.zero_floor = lr
            elif lr != self.zero_floor:
                self.zero_floor = -1.0
            self.zero_last = nlr
            n = nlr - self.zero_start + 1
            had_positive = peak > 0.0
            # a decay that crosses the floor is no drop, however small its peak
            sudden = had_positive and self.pre_zero > max(self.sudden_frac * peak, self.floor / self.sudden_frac)
            if not had_positive:
                need = self.start_patience
            elif sudden:
                need = self.zero_patience
            elif lr > self.floor and lr == self.zero_floor:
                return  # decayed to a positive floor it holds exactly: the user's min_lr
            else:  # decayed smoothly to ~0: the end of a schedule, unless it lasts
                need = self.long_frac * nlr
                if need < self.zero_patience:
                    need = self.zero_patience
            if n >= need:
                self.mode = "zero"
                self.opened_at = nlr
                if not had_positive:
                    what = "since the start"
                elif peak <= self.floor:
                    what = f"never above {fmt(self.floor)} in this log: too small to move float32 weights"
                else:
                    what = f"{'dropped' if sudden else 'decayed'} after reaching {fmt(peak)}"
                self.open_episode(
                    step, "warning",
                    f"LR has been ~0 ({fmt(lr)}) for {n} records at step {step} ({what})",
                    {"lr": lr, "records": n, "peak_lr": peak, "sudden": sudden},
                    Action("scale_lr", {"factor": self.restore_factor(lr, peak)},
                           "The learning rate is (practically) 0, so the model is not training. "
                           "Check the scheduler: it may have run past its end (T_max/total_steps "
                           "too small), be stepped per batch instead of per epoch, or the warm-up "
                           "never started." + (" No factor brings an LR this small back: set it to "
                                               "the schedule's base LR." if peak <= self.floor else "")))
            return
        prev = f.b_lrlast[i]
        if prev > 0.0 and lr > allowed * prev:
            if lr <= f.b_peak[i] * 1.0000001:
                return  # a warm restart / new cycle back to the earlier peak: by design
            self.mode = "jump"
            self.ref = prev
            self.opened_at = nlr
            factor = float(f"{prev / lr:.3g}")
            self.open_episode(
                step, "warning",
                f"LR jumped {fmt(lr / prev)}x in one step at step {step}: {fmt(prev)} -> {fmt(lr)}"
                if gap == 1 else f"LR jumped {fmt(lr / prev)}x in {gap} steps at step {step} "
                f"({fmt((lr / prev) ** (1.0 / gap))}x per step): {fmt(prev)} -> {fmt(lr)}",
                {"lr": lr, "previous_lr": prev, "ratio": lr / prev, "steps": gap},
                Action("scale_lr", {"factor": factor},
                       f"The LR jumped {fmt(lr / prev)}x in a single step, above anything this run "
                       f"used before; that usually is a scheduler bug (wrong units, a restart, a "
                       f"missing warm-up). Scale it back x{fmt(factor)} unless it was intended."))

    def _zero_bar(self, peak: float) -> float:
        """The LR at or below which it is practically 0: ``zero_frac`` x the peak so far, and never
        below ``floor`` (plain floats: the one-record path asks on every LR record)."""
        bar = self.zero_frac * peak
        return bar if bar > self.floor else self.floor

    def _zero_bars(self, peaks: np.ndarray) -> np.ndarray:
        """:meth:`_zero_bar` on a batch's column of peaks (a NaN peak stays a NaN bar: a "maybe")."""
        return np.maximum(self.zero_frac * peaks, self.floor)

    @staticmethod
    def restore_factor(lr: float, peak: float) -> float:
        """x10 when the LR is exactly 0 (nothing to scale), else back to 10% of its peak."""
        if lr <= 0.0 or peak <= 0.0:
            return 10.0
        f = 0.1 * peak / lr
        return float(f"{f:.3g}") if f > 10.0 else 10.0

    def _maybe_resolve(self, f, i: int, lr: float, ok: bool, nlr: int) -> None:
        step = f.step[i]
        if self.mode == "bad":
            if ok and lr >= 0.0:
                self.close_episode(step, f"LR is {fmt(lr)} again")
        elif self.mode == "zero":
            if ok and lr > self._zero_bar(f.peak[i]):
                self.close_episode(step, f"LR is {fmt(lr)} again")
        elif self.mode == "jump":
            if ok and lr <= 2.0 * self.ref:
                self.close_episode(step, f"LR back to {fmt(lr)}")
            elif nlr - self.opened_at >= self.jump_hold:
                self.close_episode(step, f"the run kept training at LR {fmt(lr)} for "
                                         f"{self.jump_hold} records")
        else:
            self.close_episode(step)
