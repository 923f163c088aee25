"""Oscillation: "LR too high: unstable", a loss that the LR keeps from settling, in a run that is
not lost."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .base import Detector, fmt
from .oscillation_rules import held_back, relapse, zigzag
from .types import Action

_RULES = {"zigzag": zigzag, "relapse": relapse, "held_back": held_back}


class OscillationDetector(Detector):
    """The LR is too high for the run to settle, though the run is not lost: the loss bounces
    across a valley, it climbed back up once the LR was raised and stays above the best it
    reached at the lower LR, or it stood still at a high LR and fell once the LR came down.

    On each loss record, while no episode is open, the rules are tried in this order and the
    first that holds raises the alert (``evidence["rule"]`` names it): ``zigzag`` (period-2
    oscillation), ``relapse`` (the loss gave back its progress after the LR rose),
    ``held_back`` (no progress for a doubling at a high LR, a fall once the LR came down).
    **warning** (a run that is lost gets the divergence detector's critical alert), action
    ``scale_lr`` x``factor``. Each rule says when its episode closes.

    Parameters
    ----------
    All keyword parameters, each documented once, in the module of the rule it belongs to
    (``rule_modules`` lists them; docs/detectors.md shows them below this entry):
    ``zigzag``, ``amplitude``, ``stall`` (zigzag); ``give_back``, ``lr_rise``, ``hold``, ``z``
    (relapse); ``stall_z``, ``fall_z``, ``anneal``, ``held_share``, ``steady``,
    ``min_loss_records`` (held_back); shared: ``min_records`` 30 (loss records before any rule is tried) and
    ``factor`` 0.3 (the LR cut advised: a step back, not the divergence detector's x0.1 rescue).

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> losses = [2.0 + (0.5 if s % 2 else 0.0) for s in range(200)]
    >>> out = [a for s, x in enumerate(losses) for a in eng.update(Record(s, x, lr=0.1))]
    >>> [(a.kind, a.severity, a.action.type) for a in out if a.kind == "oscillation"][:1]
    [('oscillation', 'warning', 'scale_lr')]

    References
    ----------
    AutoTrainer (oscillating loss -> LR x0.1); Cohen et al., "Edge of stability" (2021); Smith,
    "Cyclical learning rates" (the LR range test).
    """

    name = "oscillation"
    kind = "oscillation"
    static_screen = True
    rule_modules: ClassVar[tuple] = (zigzag, relapse, held_back)

    def __init__(self, zigzag: float = 0.95, amplitude: float = 0.05, stall: int = 50,
                 factor: float = 0.3, min_records: int = 30, give_back: float = 0.5,
                 lr_rise: float = 1.5, hold: int = 50, z: float = 4.0, stall_z: float = 1.0,
                 fall_z: float = 3.0, anneal: float = 0.7, held_share: float = 0.25,
                 steady: float = 0.1, min_loss_records: int = 10) -> None:
        super().__init__(zigzag=zigzag, amplitude=amplitude, stall=stall, factor=factor,
                         min_records=min_records, give_back=give_back, lr_rise=lr_rise, hold=hold, z=z,
                         stall_z=stall_z, fall_z=fall_z, anneal=anneal, held_share=held_share, steady=steady,
                         min_loss_records=min_loss_records)
        # relapse: the loss-record count and the LR at the record that set the raw best
        self.best_nl = 0
        self.best_lr = math.nan
        # held_back: the last checkpoint seen and what was kept at the last two doublings'
        # checkpoints; ``held_fresh`` is True only on the record that starts a checkpoint
        self.held_k = -1
        self.held_cps: dict[str, list[float]] = {}
        self.held_fresh = False
        # the step at which the last episode closed (-1: none yet): held_back does not tell a
        # run again what an episode told it during the doublings it looks at
        self.last_closed = -1

    def get_state(self) -> dict[str, Any]:
        return {"best_nl": self.best_nl, "best_lr": self.best_lr, "held_k": self.held_k,
                "held_cps": self.held_cps, "last_closed": self.last_closed}

    def set_state(self, d: dict[str, Any]) -> None:
        # states saved before the relapse rule: its bookkeeping restarts at the next raw best;
        # before the held_back rule: its checkpoints start at the next one
        self.best_nl = d.get("best_nl", 0)
        self.best_lr = d.get("best_lr", math.nan)
        self.held_k = d.get("held_k", -1)
        self.held_cps = d.get("held_cps", {})
        self.last_closed = d.get("last_closed", -1)

    def _best_rows(self, f):
        return f.a("lok") & (f.a("rbest_step") == f.a("step"))

    def screen(self, f):
        lok = f.a("lok")
        zig = lok & ~(f.a("alt") < self.zigzag) & (f.a("nl") >= self.min_records)
        with np.errstate(invalid="ignore"):
            best, m = f.a("rbest"), self.give_back * (f.a("l0") - f.a("rbest"))
            rel = lok & f.a("lrok") & (f.a("nl") >= self.min_records) & (m > 0.0) & \
                ~(f.a("slow") - best < m) & ~(f.a("trend") - best < m)
        return zig | rel | self._best_rows(f) | held_back.screen(f)

    def active_screen(self, f):
        a = self.alert
        if a.evidence.get("rule") in ("relapse", "held_back"):
            # held_back reads the first row of each checkpoint, with or without a loss (a
            # validation-only line: its crossing is noted, the next loss record starts the
            # checkpoint): the one-record path sees those rows, so the batch must too
            return f.a("lok") | held_back.screen(f)
        return (f.a("lok") & ~(f.a("alt") >= self.zigzag * 0.9)) | self._best_rows(f) | \
            held_back.screen(f)

    def step(self, f, i: int) -> None:
        relapse.observe(self, f, i)
        self.held_fresh = held_back.observe(self, f, i)
        if not f.lok[i]:
            return
        if self.alert is not None:
            note = _RULES[self.alert.evidence.get("rule", "zigzag")].resolved(self, f, i)
            if note is not None:
                self.close_episode(f.step[i], note)
                self.last_closed = int(f.step[i])
            return
        if f.nl[i] < self.min_records:
            return
        for name, rule in _RULES.items():
            found = rule.check(self, f, i)
            if found is not None:
                message, ev, why = found
                ev["rule"] = name
                if f.lrok[i]:
                    ev.setdefault("lr", f.lr[i])
                self.open_episode(f.step[i], "warning", message, ev, Action(
                    "scale_lr", {"factor": self.factor}, f"{why} Lower it x{fmt(self.factor)}."))
                return
