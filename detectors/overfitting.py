"""Overfitting: validation loss rising while the training loss keeps falling."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Detector, fmt
from .types import Action


class OverfittingDetector(Detector):
    """val_loss has been above its best by more than ``tol`` (relative) for ``patience``
    consecutive validation records while the training-loss trend kept falling since that best.

    **warning**, action ``rollback`` to the step of the best val_loss (the checkpoint to keep),
    with early stopping / more regularisation as advice. Resolves at a new best val_loss.

    Why: one noisy evaluation is not a trend (Keras EarlyStopping's patience); ``tol`` = 20%
    is above the evaluation noise of a small validation set; the training loss must be falling
    or the rise is a divergence (another detector), not overfitting. On the benchmark, 2% fired on
    most healthy runs with a validation loss (small validation sets wobble by 10-20%).

    Parameters
    ----------
    patience : int, default 3
    tol : float, default 0.2

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> out = []
    >>> for s in range(400):
    ...     val = (1.0 + abs(s - 200) / 100) if s % 20 == 0 else None
    ...     out += eng.update(Record(s, 2.0 - s / 400, val_loss=val))
    >>> [(a.kind, a.step, a.action.params) for a in out if a.kind == "overfitting"]
    [('overfitting', 280, {'to_step': 200})]

    References
    ----------
    Keras EarlyStopping(restore_best_weights); SageMaker Debugger Overfit rule; losslint.
    """

    name = "overfitting"
    kind = "overfitting"

    def __init__(self, patience: int = 3, tol: float = 0.2) -> None:
        super().__init__(patience=patience, tol=tol)
        self.patience = patience
        self.tol = tol
        self.best = float("inf")
        self.best_step = -1
        self.trend_at_best = float("nan")
        self.above = 0

    def get_state(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step,
                "trend_at_best": self.trend_at_best, "above": self.above}

    def set_state(self, d: dict[str, Any]) -> None:
        self.best, self.best_step = d["best"], d["best_step"]
        self.trend_at_best, self.above = d["trend_at_best"], d["above"]

    def screen(self, f):
        return f.a("vok")

    def active_screen(self, f):
        return f.a("vok")

    def step(self, f, i: int) -> None:
        if not f.vok[i]:
            return
        v = f.val[i]
        step = f.step[i]
        if v < self.best:
            self.best = v
            self.best_step = step
            self.trend_at_best = f.trend[i]
            self.above = 0
            if self.alert is not None:
                self.close_episode(step, f"new best val_loss {fmt(v)}")
            return
        if v > self.best + self.tol * abs(self.best):
            self.above += 1
        else:
            self.above = 0
        if self.alert is not None or self.above < self.patience:
            return
        trend = f.trend[i]
        tb = self.trend_at_best
        if not (f.nl[i] > 0 and tb == tb and trend < tb):
            return
        ev = {"val_loss": v, "best_val_loss": self.best, "best_step": self.best_step,
              "train_trend": trend, "train_trend_at_best": tb}
        self.open_episode(step, "warning",
                          f"overfitting: val_loss {fmt(v)} is {fmt(100 * (v / self.best - 1) if self.best else 0)}% above "
                          f"its best ({fmt(self.best)} at step {self.best_step}) while the training loss "
                          f"fell {fmt(tb)} -> {fmt(trend)}",
                          ev, Action("rollback", {"to_step": self.best_step},
                                     f"Validation loss has risen for {self.above} evaluations while "
                                     f"training loss keeps falling: the model is memorising. Keep the "
                                     f"checkpoint from step {self.best_step} and stop, or add "
                                     "regularisation / data."))
