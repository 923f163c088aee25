"""Overfitting: validation loss rising while the training loss keeps falling.

One detector, one episode per stretch of memorisation, two rules that can open it, each in a
module of :mod:`losswatch.detectors.overfitting_rules` (its condition, its parameters with the
measurements that set them, an example, references). This module holds what they share: the
parameters, the state, the order, the advice and when an episode closes.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from .base import Detector, fmt
from .overfitting_rules import drift, held_above, steady_rise, train_loss, untrained
from .types import Action


class OverfittingDetector(Detector):
    """The validation loss rose away from its best while the training loss kept falling: the
    model is memorising its training data.

    On each validation record, while no episode is open, the rules are tried in this order and
    the first that holds raises the alert (``evidence["rule"]`` names it): ``held_above`` (the
    smoothed validation loss held far above its best: long logs, noisy evaluations),
    ``steady_rise`` (the raw validation loss rose on every evaluation since its best: short
    epoch logs), ``drift`` (the raw validation loss trends up, far outside its own noise, over
    many evaluations since its best: long epoch logs with a slow creep).

    **warning**, action ``rollback`` to the step of the best validation loss (the checkpoint to
    keep), with early stopping / more regularisation as advice. The episode closes when the
    validation loss its rule measured from (smoothed for ``held_above``, raw for
    ``steady_rise``) sets a new best.

    Parameters
    ----------
    All keyword parameters, each documented once, in the module of the rule it belongs to
    (``rule_modules`` lists them; docs/detectors.md shows them below this entry):
    ``patience``, ``tol``, ``alpha``, ``max_ratio``, ``train_fall`` (held_above; the last two
    shared); ``rises``, ``rise`` (steady_rise); ``drift_evals``, ``drift_t``, ``drift_rise``,
    ``drift_train`` (drift).

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> out = []
    >>> for s in range(400):
    ...     val = (1.0 + abs(s - 200) / 100) if s % 20 == 0 else None
    ...     out += eng.update(Record(s, 2.0 - s / 400, val_loss=val))
    >>> [(a.kind, a.step, a.evidence["rule"], a.action.params) for a in out if a.kind == "overfitting"]
    [('overfitting', 260, 'steady_rise', {'to_step': 200})]

    References
    ----------
    Keras EarlyStopping(restore_best_weights); SageMaker Debugger Overfit rule; losslint;
    Prechelt, "Early stopping - but when?" (1998).
    """

    name = "overfitting"
    kind = "overfitting"
    static_screen = True
    #: The modules of its rules, in the order ``step`` tries them, then the shared piece.
    rule_modules: ClassVar[tuple] = (held_above, steady_rise, drift, untrained, train_loss)

    def __init__(self, patience: int = 3, tol: float = 0.25, alpha: float = 0.5,
                 max_ratio: float = 3.0, train_fall: float = 0.05, rises: int = 3,
                 rise: float = 0.1, drift_evals: int = 8, drift_t: float = 5.0,
                 drift_rise: float = 0.1, drift_train: float = 0.8) -> None:
        super().__init__(patience=patience, tol=tol, alpha=alpha, max_ratio=max_ratio,
                         train_fall=train_fall, rises=rises, rise=rise, drift_evals=drift_evals,
                         drift_t=drift_t, drift_rise=drift_rise, drift_train=drift_train)
        self.first_step = -1  # the step of the first evaluation, and its value
        self.first_val = math.nan
        self.eval_step = -1  # untrained: the last evaluation's step, the steps from the first to
        self.table_stride = 0  # the second, and whether every evaluation came one record and
        self.epoch_table = False  # that many steps after the one before; the first row's training
        self.first_train = math.nan  # loss and whether that row reads as the untrained model's
        self.first_untrained = False
        # held_above: the smoothed val_loss, its best, where it was and the training trend
        # there, and the evaluations in a row above the bar since
        self.vs = math.nan
        self.best = math.inf
        self.best_step = -1
        self.trend_at_best = math.nan
        self.above = 0
        self.peak = -math.inf  # the run's highest raw evaluation and the evaluations since it,
        self.since_peak = 0  # and whether one of those came back under the best
        self.back_under = False
        self.last_raw = math.inf  # the last raw evaluation and the falls in a row up to it
        self.falls = 0
        self.train_at_best = math.nan  # held_above: the training loss logged with its best, and
        self.eval_rec = 0  # the record ordinal of the last evaluation and the records since the
        self.eval_gap = 0  # one before
        # steady_rise: the raw best, where it was and the training loss there, the rises in a
        # row since (-1: broken until the next best) and the last of their values
        self.rb = math.inf
        self.rb_step = -1
        self.rb_train = math.nan
        self.rise_train = math.nan  # steady_rise: the training loss at the last rise
        self.rise_n = -1
        self.rise_vals: list[float] = []
        # drift: the evaluations since the raw best (less the best), their count and the sums a
        # least-squares line needs (index x from 0): sum y, sum x*y, sum y*y
        self.dn, self.dsy, self.dsxy, self.dsyy = 0, 0.0, 0.0, 0.0

    def get_state(self) -> dict[str, Any]:
        return {"first_step": self.first_step, "first_val": self.first_val, "vs": self.vs,
                "best": self.best, "best_step": self.best_step, "trend_at_best": self.trend_at_best,
                "above": self.above, "rb": self.rb, "rb_step": self.rb_step, "rb_train": self.rb_train,
                "rise_train": self.rise_train, "rise_n": self.rise_n, "rise_vals": list(self.rise_vals),
                "dn": self.dn, "dsy": self.dsy, "dsxy": self.dsxy, "dsyy": self.dsyy,
                "train_at_best": self.train_at_best, "eval_rec": self.eval_rec, "eval_gap": self.eval_gap,
                "peak": self.peak, "since_peak": self.since_peak, "last_raw": self.last_raw,
                "falls": self.falls, "eval_step": self.eval_step, "epoch_table": self.epoch_table,
                "table_stride": self.table_stride, "first_train": self.first_train,
                "first_untrained": self.first_untrained,
                "back_under": self.back_under}

    def set_state(self, d: dict[str, Any]) -> None:
        self.first_step, self.vs = d["first_step"], d["vs"]
        self.best, self.best_step = d["best"], d["best_step"]
        self.trend_at_best, self.above = d["trend_at_best"], d["above"]
        # absent in states saved before steady_rise existed: it starts afresh
        self.first_val = d.get("first_val", math.nan)
        self.rb, self.rb_step = d.get("rb", math.inf), d.get("rb_step", -1)
        self.rb_train, self.rise_n = d.get("rb_train", math.nan), d.get("rise_n", -1)
        self.rise_vals = list(d.get("rise_vals", []))
        self.rise_train = d.get("rise_train", math.nan)
        # absent in states saved before drift existed: its line starts at the next evaluation (its
        # count of evaluations since the best then starts there too)
        self.dn, self.dsy = d.get("dn", 0), d.get("dsy", 0.0)
        self.dsxy, self.dsyy = d.get("dsxy", 0.0), d.get("dsyy", 0.0)
        # absent in states saved before held_above read epoch logs: it reads the trend alone
        # until its next best
        self.train_at_best = d.get("train_at_best", math.nan)
        self.eval_rec, self.eval_gap = d.get("eval_rec", 0), d.get("eval_gap", 0)
        # absent in states saved before held_above judged a passed spike: it needs the latest
        # evaluation above the bar until its next run of them
        self.peak, self.since_peak = d.get("peak", -math.inf), d.get("since_peak", 0)
        self.last_raw, self.falls = d.get("last_raw", math.inf), d.get("falls", 0)
        # absent in states saved before the epoch tables were read: a step-0 evaluation stays
        # untrained
        self.eval_step, self.epoch_table = d.get("eval_step", -1), d.get("epoch_table", False)
        # absent in states saved before a table's stride was read: a stride of 1, as then
        self.table_stride = d.get("table_stride", 1 if self.eval_step >= 0 else 0)
        self.first_train = d.get("first_train", math.nan)
        self.first_untrained = d.get("first_untrained", False)
        self.back_under = d.get("back_under", False)

    def screen(self, f):
        return f.a("vok")

    def active_screen(self, f):
        return f.a("vok")

    def step(self, f, i: int) -> None:
        if not f.vok[i]:
            return
        raw = f.val[i]
        step = f.step[i]
        untrained.observe(self, f, i, step)
        if self.first_step < 0:
            self.first_step, self.first_val = step, raw
        v = raw if self.vs != self.vs else self.vs + self.alpha * (raw - self.vs)
        self.vs = v
        new_best = held_above.observe(self, f, i, raw, v, step)
        new_raw_best = steady_rise.observe(self, f, i, raw, step)
        drift.observe(self, raw, new_raw_best)
        if self.alert is not None:
            rule = self.alert.evidence.get("rule")
            if new_best if rule == "held_above" else new_raw_best:
                self.close_episode(step, f"new best val_loss {fmt(raw)}")
            return
        found = None if new_best else held_above.check(self, f, i, raw, v)
        rule = "held_above"
        if found is None:
            found, rule = steady_rise.check(self, f, i, raw), "steady_rise"
        if found is None:
            found, rule = drift.check(self, f, i, raw), "drift"
        if found is None:
            return
        text, ev = found
        ev["rule"] = rule
        best_step = ev["best_step"]
        self.open_episode(step, "warning", f"overfitting: {text}", ev,
                          Action("rollback", {"to_step": best_step},
                                 f"Validation loss has stayed up for {ev['evaluations']} evaluations"
                                 f"{train_loss.advice_words(f, i)}. Keep the checkpoint from step {best_step} "
                                 "and stop (early stopping), or add regularisation / data; no LR change "
                                 "needed."))
