"""A lost run: after blowing up, the loss is stuck at (or above) where training started."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Detector, fmt
from .types import Action


def lost_after_blowup(trend: float, l0: float, worst: float, sd: float, blowup: float) -> bool:
    """Is a stalled loss at ``trend`` the remains of a blow-up rather than a slow start?

    True when the trend sits above the first loss by more than its noise (3 MAD and 2%), or
    the loss once shot up to ``blowup`` x the first loss. A too-small LR still moves the loss
    down from where it started; it never ends above it, nor passes through 2x on the way.
    """
    if l0 != l0 or trend != trend:
        return False
    if trend > l0 + 0.02 * abs(l0) and trend - l0 > 3.0 * sd:
        return True
    return l0 != 0.0 and worst >= blowup * abs(l0)


class LostRunDetector(Detector):
    """The loss has not improved for a long time and sits at or above its first value after an
    early blow-up: the LR broke the model (e.g. dead ReLUs at chance level). **critical**,
    kind ``divergence`` (the run diverged and did not come back), action ``scale_lr``
    x``factor`` from a checkpoint before the blow-up.

    "Long" and "stuck" are the plateau detector's: no 1% gain of the trend for
    ``max(patience, patience_frac * step)`` steps and the trend >= ``stuck`` x the first loss;
    then :func:`lost_after_blowup`. On the benchmark this is how Adam/SGD at 100x the right LR
    end (MLP and CNN runs jump to 100-500 and fall back to ln(10) = 2.30, the loss of a
    constant prediction); the divergence detector's rules do not fire there because the loss
    is *falling* from its peak when the level is judged.

    Parameters
    ----------
    patience : int, default 200
    patience_frac : float, default 0.25
    stuck : float, default 0.9
    blowup : float, default 2.0
    factor : float, default 0.1
    min_records : int, default 20

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> losses = [2.3, 40.0, 150.0, 60.0, 9.0] + [2.31] * 400
    >>> out = [a for s, x in enumerate(losses) for a in eng.update(Record(s, x, lr=3.0))]
    >>> [(a.kind, a.detector, a.severity, a.action.params) for a in out if a.detector == "lost_run"]
    [('divergence', 'lost_run', 'critical', {'factor': 0.1})]

    References
    ----------
    AutoTrainer (dying ReLU, LR x0.1 repair); Lu et al., "Dying ReLU and initialization" (2019).
    """

    name = "lost_run"
    kind = "divergence"
    static_screen = True

    def __init__(self, patience: int = 200, patience_frac: float = 0.25, stuck: float = 0.9,
                 blowup: float = 2.0, factor: float = 0.1, min_records: int = 20) -> None:
        super().__init__(patience=patience, patience_frac=patience_frac, stuck=stuck,
                         blowup=blowup, factor=factor, min_records=min_records)
        self.patience = patience
        self.patience_frac = patience_frac
        self.stuck = stuck
        self.blowup = blowup
        self.factor = factor
        self.min_records = min_records
        self.first_step = -1

    def get_state(self) -> dict[str, Any]:
        return {"first_step": self.first_step}

    def set_state(self, d: dict[str, Any]) -> None:
        self.first_step = d["first_step"]

    def screen(self, f):
        step = f.a("step")
        first = f.a("nl") == 1
        fs = self.first_step
        if first.any():  # the first loss is in this batch: step() will measure patience from it
            fs = int(step[np.flatnonzero(first)[0]])
        need = np.maximum(self.patience_frac * (step - fs), self.patience)
        with np.errstate(all="ignore"):
            trend, l0 = f.a("trend"), f.a("l0")
            # superset of lost_after_blowup(): above the first loss, or a past blow-up
            maybe = ~(trend <= l0) | ~(f.a("worst") < self.blowup * np.abs(l0))
        return f.a("lok") & ((((step - f.a("pstep")) >= need) & maybe) | first)

    def active_screen(self, f):
        # resolves when the trend improves: pstep moves past the one recorded at the alert
        return f.a("lok") & (f.a("pstep") > self.alert.evidence.get("improved_at", -1))

    def step(self, f, i: int) -> None:
        if not f.lok[i]:
            return
        step = f.step[i]
        if f.nl[i] == 1:
            self.first_step = step
        if self.alert is None and step - f.pstep[i] < self.patience:
            return
        if self.alert is not None:
            if f.pstep[i] > self.alert.evidence.get("improved_at", -1):
                self.close_episode(step, f"loss improving again ({fmt(f.trend[i])})")
            return
        if f.nl[i] < self.min_records:
            return
        since = step - f.pstep[i]
        p = self.patience_frac * (step - self.first_step)
        if since < (p if p > self.patience else self.patience):
            return
        trend = f.trend[i]
        l0 = f.l0[i]
        if not (trend >= self.stuck * l0 if l0 > 0 else trend >= l0):
            return
        if not lost_after_blowup(trend, l0, f.worst[i], f.sd[i], self.blowup):
            return
        ev = {"trend": trend, "first_loss": l0, "worst": f.worst[i], "since": since,
              "improved_at": f.pstep[i]}
        self.open_episode(step, "critical",
                          f"run lost: the loss blew up to {fmt(f.worst[i])} and has been stuck at "
                          f"{fmt(trend)} (it started at {fmt(l0)}) for {since} steps",
                          ev, Action("scale_lr", {"factor": self.factor},
                                     f"The loss exploded early and never came back below where it "
                                     f"started: the LR broke the model. Restart from an early "
                                     f"checkpoint (or from scratch) with the LR x{fmt(self.factor)}."))
