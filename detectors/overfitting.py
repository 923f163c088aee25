"""Overfitting: validation loss rising while the training loss keeps falling."""

from __future__ import annotations

from typing import Any

from .base import Detector, fmt
from .types import Action


class OverfittingDetector(Detector):
    """The smoothed val_loss (EMA over validation records, ``alpha``) has been above its best by
    more than ``tol`` (relative) for ``patience`` consecutive validation records while the
    training-loss trend kept falling since that best (by ``train_fall``, 5%: a flat training loss
    with a wandering val loss is noise, not memorisation).

    **warning**, action ``rollback`` to the step of the best val_loss (the checkpoint to keep),
    with early stopping / more regularisation as advice. Resolves at a new best val_loss.

    Why: one noisy evaluation is not a trend (Keras EarlyStopping's patience), and smoothing
    two-record-wise keeps one bad evaluation from setting or breaking a streak; ``tol`` = 25%
    is above the evaluation noise of a small validation set (the benchmark's wobble by 10-30%:
    2% fired on most healthy runs) and matches the benchmark's definition (the last three
    evaluations 1.25x the best); the training loss must be falling or the rise is a divergence
    (another detector), not overfitting. Not when the best val_loss is the first evaluation or
    the smoothed val_loss is above ``max_ratio`` x its best: a model that never generalised or
    blew up (the benchmark's SGD x100 runs: val 2.3 -> 16) is broken, not memorising.

    Parameters
    ----------
    patience : int, default 3
    tol : float, default 0.25
    alpha : float, default 0.5
    max_ratio : float, default 3.0
    train_fall : float, default 0.05

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
    [('overfitting', 320, {'to_step': 200})]

    References
    ----------
    Keras EarlyStopping(restore_best_weights); SageMaker Debugger Overfit rule; losslint.
    """

    name = "overfitting"
    kind = "overfitting"
    static_screen = True

    def __init__(self, patience: int = 3, tol: float = 0.25, alpha: float = 0.5,
                 max_ratio: float = 3.0, train_fall: float = 0.05) -> None:
        super().__init__(patience=patience, tol=tol, alpha=alpha, max_ratio=max_ratio,
                         train_fall=train_fall)
        self.first_step = -1
        self.vs = float("nan")  # smoothed val_loss
        self.best = float("inf")
        self.best_step = -1
        self.trend_at_best = float("nan")
        self.above = 0

    def get_state(self) -> dict[str, Any]:
        return {"first_step": self.first_step, "vs": self.vs, "best": self.best, "best_step": self.best_step,
                "trend_at_best": self.trend_at_best, "above": self.above}

    def set_state(self, d: dict[str, Any]) -> None:
        self.first_step, self.vs = d["first_step"], d["vs"]
        self.best, self.best_step = d["best"], d["best_step"]
        self.trend_at_best, self.above = d["trend_at_best"], d["above"]

    def screen(self, f):
        return f.a("vok")

    def active_screen(self, f):
        return f.a("vok")

    def step(self, f, i: int) -> None:
        if not f.vok[i]:
            return
        raw = f.val[i]
        step = f.step[i]
        if self.first_step < 0:
            self.first_step = step
        v = raw if self.vs != self.vs else self.vs + self.alpha * (raw - self.vs)
        self.vs = v
        if v < self.best:
            self.best = v
            self.best_step = step
            self.trend_at_best = f.trend[i]
            self.above = 0
            if self.alert is not None:
                self.close_episode(step, f"new best val_loss {fmt(raw)}")
            return
        if v > self.best + self.tol * abs(self.best):
            self.above += 1
        else:
            self.above = 0
        if self.alert is not None or self.above < self.patience:
            return
        trend = f.trend[i]
        tb = self.trend_at_best
        if not (f.nl[i] > 0 and tb == tb and trend < tb - self.train_fall * abs(tb)):
            return
        if self.best_step == self.first_step or v > self.max_ratio * abs(self.best):
            return  # val never improved, or it exploded: a broken model, not memorisation
        ev = {"val_loss": raw, "val_smoothed": v, "best_val_smoothed": self.best,
              "best_step": self.best_step, "train_trend": trend, "train_trend_at_best": tb}
        pct = 100 * (v / self.best - 1) if self.best else 0.0
        self.open_episode(step, "warning",
                          f"overfitting: val_loss (smoothed {fmt(v)}) is {fmt(pct)}% above its best "
                          f"({fmt(self.best)} at step {self.best_step}) while the training loss "
                          f"fell {fmt(tb)} -> {fmt(trend)}",
                          ev, Action("rollback", {"to_step": self.best_step},
                                     f"Validation loss has stayed up for {self.above} evaluations while "
                                     f"training loss keeps falling: the model is memorising. Keep the "
                                     f"checkpoint from step {self.best_step} and stop, or add "
                                     "regularisation / data."))
