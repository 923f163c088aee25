"""Grad-norm explosion: the gradient norm jumps far above its own recent range."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Detector, fmt
from .features import LOG_TINY
from .spike import clip_from_history
from .types import Action


class GradExplosionDetector(Detector):
    """The grad-norm is ``ratio`` x above its typical value and ``z`` sd out: clip.

    ``typical`` is exp of the EMA mean of log(grad-norm) before this step (winsorised, so one
    explosion does not become the new normal); the sd is that of log(grad-norm). Needs
    ``min_records`` earlier grad-norms. **warning**, action ``clip_grad_norm`` at a max_norm from
    the run's own history. Re-arms when the grad-norm is back below ``resolve_ratio`` x typical.

    Why: BLOOM-176B's grad-norm rose 0.24 -> 960 over five steps before its loss spiked; PaLM
    and OLMo report the same ordering. Grad-norm is the early warning, and clipping at the
    run's own range (ZClip) is the cheap remedy that keeps training going. An LR cut is the
    divergence detector's call, once the loss confirms.
    A factor of 10 in one record is far outside minibatch variation (log-sd of a healthy
    grad-norm is ~0.1-0.3), and z = 4 adds robustness for runs whose grad-norm is noisy.

    Parameters
    ----------
    ratio : float, default 10.0
    z : float, default 4.0
    min_records : int, default 10
    resolve_ratio : float, default 3.0
    loss_spike : float, default 0.2

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> gns = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.1, 0.9, 1.0, 1.0, 50.0]
    >>> out = [a for s, g in enumerate(gns) for a in eng.update(Record(s, 2.0 + 0.01 * (s % 3), grad_norm=g))]
    >>> [(a.kind, a.step, a.action.type) for a in out]
    [('grad_explosion', 11, 'clip_grad_norm')]

    References
    ----------
    ZClip (Kumar et al., 2025); BLOOM tr11-176B chronicles; stabilityguard (grad-norm > 10x EMA).
    """

    name = "grad_explosion"
    judges_descent = False  # a fact whatever the loss means (objective.py)
    kind = "grad_explosion"
    static_screen = True

    def __init__(self, ratio: float = 10.0, z: float = 4.0, min_records: int = 10,
                 resolve_ratio: float = 3.0, loss_spike: float = 0.2) -> None:
        super().__init__(ratio=ratio, z=z, min_records=min_records, resolve_ratio=resolve_ratio,
                         loss_spike=loss_spike)

    def screen(self, f):
        with np.errstate(all="ignore"):
            g = f.a("gn")
            mu = f.a("b_mu")
            # np.log may differ from math.log in the last bit: over-include by a margin
            return f.a("gok") & (f.a("ng") > self.min_records) & \
                ~(g * (1.0 + 1e-9) < np.exp(mu) * self.ratio)

    def active_screen(self, f):
        with np.errstate(all="ignore"):
            return f.a("gok") & ~(f.a("gn") > np.exp(f.a("b_mu")) * self.resolve_ratio * (1.0 + 1e-9))

    def step(self, f, i: int) -> None:
        if not f.gok[i]:
            return
        if self.alert is None and f.ng[i] <= self.min_records:
            return
        g = f.gn[i]
        lg = math.log(g) if g > 1e-30 else LOG_TINY
        mu = f.b_mu[i]
        step = f.step[i]
        if self.alert is not None:
            if lg - mu <= math.log(self.resolve_ratio):
                self.close_episode(step, f"grad-norm back to {fmt(g)} (typical {fmt(math.exp(mu))})")
            return
        if f.lok[i]:
            lvl = f.b_slow[i]
            if f.loss[i] - lvl > self.loss_spike * abs(lvl):
                return  # the loss spiked on the same step: the spike detector reports it (one alert)
        var = f.b_var[i]
        sd = math.sqrt(var) if var > 0.0 else 0.0
        if not (lg - mu >= math.log(self.ratio) and lg - mu >= self.z * sd):
            return
        typical = math.exp(mu)
        max_norm = clip_from_history(mu, var)
        ev: dict[str, Any] = {"grad_norm": g, "typical": typical, "log_sd": sd,
                              "factor_over_typical": g / typical if typical > 0 else math.inf}
        if f.lok[i]:
            ev["loss"] = f.loss[i]
        msg = (f"grad-norm exploded at step {step}: {fmt(g)} is {fmt(g / typical)}x its typical "
               f"{fmt(typical)}")
        act = Action("clip_grad_norm", {"max_norm": max_norm},
                     f"The gradient norm jumped {fmt(g / typical)}x above its usual range: an early "
                     f"warning of divergence. Clip at max_norm={fmt(max_norm)}; if the loss starts "
                     "climbing too, lower the LR.")
        self.open_episode(step, "warning", msg, ev, act)
