"""Divergence: the loss runs away from its best and keeps going."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Detector, fmt
from .types import Action

#: Share of the progress made (first loss - best) that counts as the scale of "x times worse"
#: when it is larger than the best itself.
PROGRESS_SHARE = 0.5


def _ratio(x: float, ref: float) -> float:
    """x relative to a reference level (works for references <= 0 too)."""
    den = abs(ref)
    if den < 1e-12:
        den = 1e-12
    return 1.0 + (x - ref) / den


def _pratio(x: float, ref: float, l0: float) -> float:
    """Like :func:`_ratio`, but against half the progress made when that is larger than the
    level: for a loss that went from 2.4 to 0.01, 0.02 is not "2x worse" (noise), 1.2 is "the
    whole way back up" (the benchmark's lost-run rule uses the same scale). For a loss that
    started near its best (BLOOM excerpts) it is the plain ratio."""
    den = abs(ref)
    p = PROGRESS_SHARE * (l0 - ref)
    if p > den:
        den = p
    if den < 1e-12:
        den = 1e-12
    return 1.0 + (x - ref) / den


def ratio_arr(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """:func:`_ratio` on arrays, with the same operations in the same order (bit-identical)."""
    return 1.0 + (x - ref) / np.maximum(np.abs(ref), 1e-12)


def pratio_arr(x: np.ndarray, ref: np.ndarray, l0: np.ndarray) -> np.ndarray:
    """:func:`_pratio` on arrays (bit-identical)."""
    den = np.abs(ref)
    p = PROGRESS_SHARE * (l0 - ref)
    den = np.where(p > den, p, den)
    return 1.0 + (x - ref) / np.maximum(den, 1e-12)


class DivergenceDetector(Detector):
    """The loss rose well above its best and is still rising: cut the LR.

    ``best`` is the running minimum of the winsorised loss level (``features.slow``), so a
    lucky low batch does not set the bar; "x times best" is measured by :func:`_pratio`
    (against half the progress made when the loss has fallen far). Three ways to fire, all
    **critical**, action ``scale_lr`` x``factor`` (0.1: the classic first step, AutoTrainer's
    first repair):

    1. *Run-away streak* (decides from a handful of points): ``streak`` consecutive rises of the
       raw loss starting near the best (the loss before the streak <= ``base_ratio`` x best),
       the latest >= ``streak_ratio`` x best and >= (1 + ``streak_rise``) x the loss before the
       streak. Noise guards: the loss before the latest is ``prev_z`` noise units above the level
       (two elevated points, so noise then one data spike is no streak: the 1.5B speedrun logs
       have ~100 spikes) and the latest ``streak_z`` units (speedrun 1.5B step 5818, a 2-step
       excursion, is 7 units out; BLOOM-104B exp2 is 28, the practitioner's 2.5, 2.4, 2.6, 3.1,
       4.2 is 34 and fires at 4.2, before its NaN).
    2. *Blow-up with the grad-norm*: loss >= ``gn_ratio`` x best while the grad-norm is
       >= ``gn_abs`` and at least doubled since the previous record. Grad-norms of 1e4-1e6 are
       what BLOOM-104B logged while diverging (healthy runs log 0.1-10); the doubling requirement
       keeps a run that merely lives at a huge grad-norm (skipped fp16 steps repeat the same
       value) from firing on a loss spike.
    3. *Sustained*: the loss level (``slow``) stays >= ``level_ratio`` x best for ``sustain``
       consecutive records, the short-term average is not falling back (``fast >= slow``) and
       is still >= ``keep`` x the highest it reached in this excursion (a spike that is decaying
       is recovering, not diverging). Not when the LR is cyclic and rising (>= 2 LR reversals so
       far, LR going up): the LR explains that loss (CLR / SGDR raise it by design).

    The episode resolves once both the loss level and its 2-record average are back below
    ``resolve_ratio`` x best (the winsorised level alone lags a blow-up and "recovered" during it).

    Parameters
    ----------
    factor : float, default 0.1
    streak : int, default 3
    streak_ratio : float, default 1.3
    streak_rise : float, default 0.25
    base_ratio : float, default 1.25
    prev_z : float, default 3.0
    streak_z : float, default 10.0
    gn_ratio : float, default 1.5
    gn_abs : float, default 1e4
    level_ratio : float, default 1.5
    sustain : int, default 10
    keep : float, default 0.7
    resolve_ratio : float, default 1.15

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> out = [a for s, x in enumerate([2.5, 2.4, 2.6, 3.1, 4.2]) for a in eng.update(Record(s, x))]
    >>> out[0].kind, out[0].step, out[0].action.params
    ('divergence', 4, {'factor': 0.1})

    References
    ----------
    BLOOM tr8-104B chronicles (divergence at the end of warm-up, grad-norm 1e5); llm-foundry
    KillLossSpike (consecutive high losses -> lower LR); AutoTrainer (LR x0.1 repair).
    """

    name = "divergence"
    kind = "divergence"

    def __init__(self, factor: float = 0.1, streak: int = 3, streak_ratio: float = 1.3,
                 streak_rise: float = 0.25, base_ratio: float = 1.25, prev_z: float = 3.0,
                 streak_z: float = 10.0, gn_ratio: float = 1.5, gn_abs: float = 1e4,
                 level_ratio: float = 1.5, sustain: int = 10, keep: float = 0.7,
                 resolve_ratio: float = 1.15) -> None:
        super().__init__(factor=factor, streak=streak, streak_ratio=streak_ratio,
                         streak_rise=streak_rise, base_ratio=base_ratio, prev_z=prev_z,
                         streak_z=streak_z, gn_ratio=gn_ratio, gn_abs=gn_abs,
                         level_ratio=level_ratio, sustain=sustain, keep=keep,
                         resolve_ratio=resolve_ratio)
        self.factor = factor
        self.streak = streak
        self.streak_ratio = streak_ratio
        self.streak_rise = streak_rise
        self.base_ratio = base_ratio
        self.prev_z = prev_z
        self.streak_z = streak_z
        self.gn_ratio = gn_ratio
        self.gn_abs = gn_abs
        self.level_ratio = level_ratio
        self.sustain = sustain
        self.keep = keep
        self.resolve_ratio = resolve_ratio
        self.hi_start = 0  # loss-record count at which the current run of high levels began
        self.hi_last = -1
        self.hi_peak = float("-inf")  # highest short-term loss in that run

    def get_state(self) -> dict[str, Any]:
        return {"hi_start": self.hi_start, "hi_last": self.hi_last, "hi_peak": self.hi_peak}

    def set_state(self, d: dict[str, Any]) -> None:
        self.hi_start, self.hi_last, self.hi_peak = d["hi_start"], d["hi_last"], d["hi_peak"]

    # -- screens (conservative: NaN comparisons count as "maybe") ---------------------------------
    def screen(self, f):
        with np.errstate(all="ignore"):
            best = f.a("best")
            l0 = f.a("l0")
            streak = (f.a("up_n") >= self.streak) & \
                ~(pratio_arr(f.a("loss"), best, l0) < self.streak_ratio)
            gn = f.a("gok") & ~(f.a("gn") < self.gn_abs) & \
                ~(ratio_arr(f.a("loss"), best) < self.gn_ratio)
            level = ~(pratio_arr(f.a("slow"), best, l0) < self.level_ratio)
            return f.a("lok") & (streak | gn | level)

    def active_screen(self, f):
        with np.errstate(all="ignore"):
            best, l0 = f.a("best"), f.a("l0")
            return f.a("lok") & ~(pratio_arr(f.a("slow"), best, l0) >= self.resolve_ratio) & \
                ~(pratio_arr(f.a("fast"), best, l0) >= self.resolve_ratio)

    # -- decision ----------------------------------------------------------------------------------
    def step(self, f, i: int) -> None:
        if not f.lok[i]:
            return
        x = f.loss[i]
        best = f.best[i]
        l0 = f.l0[i]
        step = f.step[i]
        slow = f.slow[i]
        if self.alert is not None:
            if _pratio(slow, best, l0) < self.resolve_ratio and \
                    _pratio(f.fast[i], best, l0) < self.resolve_ratio:
                self.close_episode(step, f"loss level back to {fmt(slow)} (best {fmt(best)})")
            return
        nl = f.nl[i]
        if nl < 2:
            return
        rule = None
        up_n = f.up_n[i]
        base = f.up_base[i]
        if up_n >= self.streak and _pratio(x, best, l0) >= self.streak_ratio and \
                _ratio(x, base) >= 1.0 + self.streak_rise and \
                _pratio(base, best, l0) <= self.base_ratio and \
                f.b_lprev[i] - f.b_slow[i] >= self.prev_z * f.b_sd[i] and \
                x - f.b_slow[i] >= self.streak_z * f.b_sd[i]:
            rule = (f"rose {up_n} records in a row, {fmt(base)} -> {fmt(x)}", "streak")
        g = f.gn[i]
        if rule is None and f.gok[i] and g >= self.gn_abs and _ratio(x, best) >= self.gn_ratio:
            gprev = f.b_glast[i]
            if f.ng[i] >= 2 and g >= 2.0 * gprev:
                rule = (f"jumped with the grad-norm at {fmt(g)} (was {fmt(gprev)})", "grad_norm")
        lvl = _pratio(slow, best, l0)
        if lvl >= self.level_ratio:
            fast = f.fast[i]
            if self.hi_last != nl - 1:
                self.hi_start = nl
                self.hi_peak = fast
            elif fast > self.hi_peak:
                self.hi_peak = fast
            self.hi_last = nl
            n_hi = nl - self.hi_start + 1
            cyclic_rise = f.rev[i] >= 2 and f.lrdir[i] > 0
            if rule is None and n_hi >= self.sustain and fast >= slow and \
                    fast >= self.keep * self.hi_peak and not cyclic_rise:
                rule = (f"its level has stayed {fmt(_ratio(slow, best))}x above it for {n_hi} records",
                        "sustained")
        if rule is None:
            return
        self._raise(f, i, x, best, _ratio(x, best), rule)

    def _raise(self, f, i: int, x: float, best: float, ratio: float, rule: tuple[str, str]) -> None:
        step = f.step[i]
        bstep = f.best_step[i]
        warm = f.lrok[i] and f.lrdir[i] > 0 and f.rev[i] == 0 and f.nlr[i] > 1
        msg = (f"loss diverging: {fmt(x)} at step {step} is {fmt(ratio)}x its best "
               f"({fmt(best)} at step {bstep}) and {rule[0]}")
        reason = (f"The loss is running away ({fmt(ratio)}x its best). Cut the LR "
                  f"{fmt(1 / self.factor)}x (x{fmt(self.factor)}); if it does not come back within a "
                  f"few hundred steps, roll back to a checkpoint near step {bstep}.")
        if warm:
            reason += " The LR is still warming up: a longer warm-up or a lower peak LR is the usual fix."
        ev: dict[str, Any] = {"loss": x, "best": best, "best_step": bstep, "ratio": ratio,
                              "rule": rule[1]}
        if f.gok[i]:
            ev["grad_norm"] = f.gn[i]
        if f.lrok[i]:
            ev["lr"] = f.lr[i]
        self.open_episode(step, "critical", msg, ev, Action("scale_lr", {"factor": self.factor}, reason))
