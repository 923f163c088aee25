"""Validation-loss spike: one evaluation far above the one before, while the training loss is calm.

A validation loss is an average over a whole split, so it has none of the minibatch noise that
the training-loss spike rule (:mod:`losswatch.detectors.spike`) measures a jump against, and it
is logged far more sparsely (once per epoch or per eval interval): there is rarely a history to
estimate its noise from. A jump to ``ratio`` x the previous evaluation in one evaluation, while
the training loss stays near its level, is an evaluation event: the model was briefly in a bad
region after a large update (BatchNorm statistics after a big step in the first epochs of a
fine-tune), or the evaluation itself misbehaved. It is a note (info), never an LR change: a jump
that comes back is transient, and one that stays is what the overfitting detector judges on the
validation curve.

Repeated, the same jumps are no longer events: a validation loss that jumps ``ratio`` x in one
evaluation ``repeats`` times in a run while the training loss keeps calm is a model thrown about
the valley by every large update, the LR too high for it (a classifier whose val loss goes 0.58
-> 2.30, 0.17 -> 1.52, 0.14 -> 2.81 while its training loss falls 2.27 -> 0.34): a warning that
lowers the LR.
"""

from __future__ import annotations

from typing import Any

from .base import Detector, fmt
from .types import Action


class ValSpikeDetector(Detector):
    """One evaluation's validation loss at ``ratio`` x the previous one or more: a note.

    Rule: at a finite validation loss ``v`` whose previous evaluation ``p`` was finite and > 0:
    ``v >= ratio * p``, and the training loss is calm (its last value at most ``1 + train_rel``
    x its level before this record, or no training loss logged). The note resolves when a later
    validation loss is back within ``1 + back`` x ``p``. The ``repeats``-th such jump in a run is a
    warning with ``scale_lr`` x``factor``: the LR is too high for the valley.

    Parameters
    ----------
    ratio : float, default 2.0
        How many times the previous evaluation. Lightning Fabric's SpikeDetection bar (2x the
        running mean), the one the training-loss spike rule uses while it has no noise estimate:
        a validation loss never has one. On the tune part of the real-log corpus no overfitting
        log's validation loss rises this much in one evaluation (at most 1.95x), and no healthy
        benchmark run's does 1.5x; the one healthy log that passes it (0.019 -> 0.067 -> 0.016) is
        a real one-evaluation spike.
    back : float, default 0.2
        Resolved when the validation loss is back within this share above the pre-spike value
        (the training-loss spike rule's ``rel``).
    train_rel : float, default 0.2
        A training loss more than this share above its level at the same time means the training
        jumped too: the training-loss detectors own that (spike, divergence), no note here.
    repeats : int, default 3
        The jump that makes the LR too high. On the tune part of the real-log corpus only a
        classifier whose answer blames the LR (Cross Validated 478017) jumps 2x three times;
        the most on a healthy tune log or healthy benchmark run is one (the benchmark's LR-jump
        run at its tuned LR: three, after the jump).
    factor : float, default 0.5
        The LR cut: halving, the usual step against an oscillating validation loss (the jumps
        say the LR is too high, not how far).

    Example
    -------
    A Keras ResNet50 fine-tune's epoch log: val loss 1.44, 7.42, 1.29 while the training loss falls
    1.72, 1.53, 1.44: a note at epoch 1, resolved at epoch 2.

    >>> from losswatch.detectors.base import drive
    >>> from losswatch.detectors.types import Record
    >>> out = drive(ValSpikeDetector(), [Record(0, 1.72, val_loss=1.44), Record(1, 1.53, val_loss=7.42),
    ...                                  Record(2, 1.44, val_loss=1.29)])
    >>> [(a.kind, a.severity, a.step, a.resolved_step) for a in out]
    [('spike', 'info', 1, None), ('spike', 'info', 1, 2)]

    References
    ----------
    Lightning Fabric SpikeDetection (2x the running mean); the training-loss spike rule, spike.py.
    """

    name = "val_spike"
    kind = "spike"
    static_screen = True

    def __init__(self, ratio: float = 2.0, back: float = 0.2, train_rel: float = 0.2, repeats: int = 3,
                 factor: float = 0.5) -> None:
        super().__init__(ratio=ratio, back=back, train_rel=train_rel, repeats=repeats, factor=factor)
        self.vprev = float("nan")  # the last finite validation loss
        self.vbase = float("nan")  # the one before the spike (while a note is open)
        self.jumps = 0  # the jumps seen in the run

    def get_state(self) -> dict[str, Any]:
        return {"vprev": self.vprev, "vbase": self.vbase, "jumps": self.jumps}

    def set_state(self, d: dict[str, Any]) -> None:
        self.vprev, self.vbase = d["vprev"], d["vbase"]
        self.jumps = d.get("jumps", 0)  # absent in states saved before it existed

    def screen(self, f):
        return f.a("has_val")  # every validation loss: the rule keeps the previous one

    def step(self, f, i: int) -> None:
        if not f.has_val[i]:
            return
        if not f.vok[i]:  # a NaN evaluation (the NaN rule's): the next one has no previous
            self.vprev = float("nan")
            return
        v = f.val[i]
        p = self.vprev
        self.vprev = v
        step = f.step[i]
        if self.alert is not None:
            if v <= (1.0 + self.back) * self.vbase:
                self.close_episode(step, f"validation loss back to {fmt(v)} (before the spike {fmt(self.vbase)})")
            return
        if not p > 0.0 or not v >= self.ratio * p:
            return
        if f.nl[i] > 1 and f.lprev[i] > (1.0 + self.train_rel) * f.b_slow[i]:
            return  # the training loss jumped as well: not an evaluation event
        self.vbase = p
        self.jumps += 1
        ev = {"signal": "val_loss", "val_loss": v, "previous": p, "ratio": v / p, "jumps": self.jumps}
        train = f" while the training loss is {fmt(f.lprev[i])}" if f.nl[i] > 0 else ""
        if self.jumps >= self.repeats:
            self.open_episode(
                step, "warning",
                f"LR too high: the validation loss jumped to {fmt(v)} at step {step}, {fmt(v / p)}x the "
                f"previous evaluation ({fmt(p)}){train}: {self.jumps} jumps of {fmt(self.ratio)}x or more in "
                f"one evaluation in this run", ev,
                Action("scale_lr", {"factor": self.factor},
                       f"The validation loss keeps jumping far above the evaluation before while training "
                       f"goes on: each large update throws the model across the valley. Lower the LR "
                       f"{fmt(1 / self.factor)}x (x{fmt(self.factor)}) and keep the checkpoint of the best "
                       f"evaluation."))
            return
        self.open_episode(
            step, "info",
            f"validation loss spike at step {step}: {fmt(v)}, {fmt(v / p)}x the previous evaluation "
            f"({fmt(p)}){train}", ev,
            Action("none", {}, "One evaluation far above the one before while training goes on: "
                   "the model was briefly in a bad region after a large update, or the evaluation "
                   "misbehaved. Nothing to do if the next evaluation is back; do not pick this "
                   "checkpoint."))
