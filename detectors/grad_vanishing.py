"""Vanishing gradients: the grad-norm collapsed and the loss stopped moving."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Detector, fmt
from .features import LOG_TINY
from .types import Action


class GradVanishingDetector(Detector):
    """The grad-norm is tiny (below ``abs_tiny`` or ``rel_tiny`` x its own peak level) for
    ``patience`` consecutive grad-norm records while the loss makes no progress.

    "No progress": the plateau statistic in features (the slow loss trend has not improved by
    1% since before the tiny gradients began). **warning**, action ``none`` with advice: a
    network whose gradients vanished is rarely rescued by the LR (AutoTrainer repairs it with
    activations, initialisation or normalisation); the grad-norm is logged but learning stopped.

    Why: SageMaker Debugger's vanishing-gradient rule and trainpulse use an absolute 1e-7;
    a relative floor (1e-4 of the run's own peak typical level) also catches deep nets whose
    scale is unusual. Patience 20 records: a single tiny norm is a quiet batch, not a dead net.

    Parameters
    ----------
    abs_tiny : float, default 1e-7
    rel_tiny : float, default 1e-4
    patience : int, default 20

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> out = [a for s in range(40) for a in eng.update(Record(s, 0.69, grad_norm=1e-9))]
    >>> [(a.kind, a.step, a.severity) for a in out]  # frozen at ln 2 for 6 records: dead, too
    [('dead', 5, 'warning'), ('grad_vanishing', 19, 'warning')]

    References
    ----------
    AutoTrainer (Zhang et al., ICSE'21); SageMaker Debugger VanishingGradient rule.
    """

    name = "grad_vanishing"
    kind = "grad_vanishing"
    static_screen = True

    def __init__(self, abs_tiny: float = 1e-7, rel_tiny: float = 1e-4, patience: int = 20) -> None:
        super().__init__(abs_tiny=abs_tiny, rel_tiny=rel_tiny, patience=patience)
        self._log_rel = math.log(rel_tiny)
        self.start = 0  # grad-norm record count where the current run of tiny norms began
        self.last = -1
        self.start_step = -1

    def get_state(self) -> dict[str, Any]:
        return {"start": self.start, "last": self.last, "start_step": self.start_step}

    def set_state(self, d: dict[str, Any]) -> None:
        self.start, self.last, self.start_step = d["start"], d["last"], d["start_step"]

    def _tiny(self, g: float, mumax: float) -> bool:
        if g < self.abs_tiny:
            return True
        lg = math.log(g) if g > 1e-30 else LOG_TINY
        return lg < mumax + self._log_rel

    def screen(self, f):
        with np.errstate(all="ignore"):
            g = f.a("gn")
            rel = np.exp(f.a("mumax")) * self.rel_tiny * (1.0 + 1e-9)
            return f.a("gok") & ((g < self.abs_tiny) | ~(g >= rel))

    def active_screen(self, f):
        with np.errstate(all="ignore"):
            g = f.a("gn")
            lo = 1.0 - 1e-9
            return f.a("gok") & ~(g < self.abs_tiny * lo) & \
                ~(g < np.exp(f.a("mumax")) * self.rel_tiny * lo)

    def step(self, f, i: int) -> None:
        if not f.gok[i]:
            return
        g = f.gn[i]
        tiny = self._tiny(g, f.mumax[i])
        if not tiny and self.alert is None:
            return
        ng = f.ng[i]
        step = f.step[i]
        if self.alert is not None:
            if not tiny:
                self.close_episode(step, f"grad-norm back to {fmt(g)}")
            return
        if self.last != ng - 1:
            self.start = ng
            self.start_step = step
        self.last = ng
        n = ng - self.start + 1
        if n < self.patience or f.pstep[i] > self.start_step:
            return
        ev = {"grad_norm": g, "records": n, "since_step": self.start_step,
              "peak_typical": math.exp(f.mumax[i])}
        msg = (f"vanishing gradients: grad-norm {fmt(g)} for {n} records since step "
               f"{self.start_step} and the loss stopped improving")
        act = Action("none", {}, "The gradients have all but vanished and learning stalled. Raising "
                     "the LR rarely fixes this: check for dead ReLUs, saturated activations, frozen or "
                     "detached parameters, or a missing normalisation layer.")
        self.open_episode(step, "warning", msg, ev, act)
