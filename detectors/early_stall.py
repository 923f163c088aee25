"""Early stall: a large LR knocked training into a flat region right at the start."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Detector, fmt
from .types import Action


class EarlyStallDetector(Detector):
    """Stuck right after a fast start at a large LR: the grad-norm faded, the loss sits flat far
    above where a well-tuned run goes, and it never rose, so no divergence rule fires.

    Typical of a post-LN transformer without warm-up or at a too-large LR: the loss drops fast
    in the first steps and then stays flat while the grad-norm collapses (attention/LayerNorm
    saturated). A cut alone leaves the weights in that flat region (closed-loop bench: 1.27x
    tuned); a cut *and a restart* gets a tuned-like run.

    Rule, on each grad-norm record (all from the shared features, O(1)):

    - ``mu <= mumax - log(collapse)``: the typical log-grad-norm is ``collapse``x below its
      peak so far;
    - the slow loss level is ``>= stuck * L0`` (``L0`` the first loss, > 0): a converged
      classifier or regression ends far below half its start, a stuck LM does not;
    - no new best of the loss level for ``stall`` steps and as many loss records (a healthy LM
      early in training, e.g. llm.c's GPT-2 with its grad-norm 15 -> 1 during warm-up, keeps
      making new bests; its log with the step column x10 went 20 steps, two records, without
      one at step 3,140 and was told to cut the LR x0.1 and restart: a new best of a noisy
      level is a matter of records, the records of the log's mean gap);
    - the loss made a fast start: its best level is ``<= drop * L0`` (a loss flat at its first
      value from the start is the plain vanishing-gradient or plateau case);
    - the fast loss level never rose above ``rise`` x ``L0`` (a run that blew up and fell back
      belongs to the divergence and spike rules: without this test the rule fired on 9
      LR-too-high benchmark runs that had blown up first, and on one healthy run);
    - the LR, when logged, is ``>= decayed`` x its peak (a decayed schedule's small steps, or a
      cut already made, shrink the grad-norm by design).

    Held for ``patience`` consecutive grad-norm records: **warning**, kind ``grad_vanishing``
    (the symptom: a faded gradient with a stalled loss), action ``scale_lr`` x``factor`` with
    ``evidence["restart_step"]`` the run's first step: cut the LR *and restart* (the Actor
    rolls back there when it has ``on_rollback``). Resolves when the grad-norm is back within
    ``collapse / 2`` of its peak, when the fast loss level is back at >= 0.9 x ``L0`` (the run
    was restarted; stuck again, a new alert asks again), or when the loss level makes a new
    best 5% below its best at the alert (it moved on).

    Why these defaults: on the closed-loop bench the six stuck transformers reach 7-25x below
    their peak grad-norm at 0.57-0.65 of the first loss; their tuned siblings stay within 5.7x
    (at most 0.48 of the first loss once below 6x). ``collapse`` 6 with the stall and
    no-rise tests raises nothing on the 246 detection-benchmark runs nor on the public logs
    (``collapse`` 7 without the stall test fired on llm.c GPT-2 at step 74). ``factor`` 0.1:
    x0.3 with the restart rescued the no-warm-up runs (1.04-1.07x tuned) but left the LR 10x
    runs stuck (1.27-1.31x); x0.1 ended all six at 1.02-1.11x.

    Parameters
    ----------
    collapse : float, default 6.0
    stuck : float, default 0.5
    decayed : float, default 0.5
    patience : int, default 10
    factor : float, default 0.1
    rise : float, default 1.05
    stall : int, default 20
    drop : float, default 0.9

    Examples
    --------
    >>> import random
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng, r = Engine("r"), random.Random(0)
    >>> loss = lambda s: 4.6 if s < 5 else 2.9 + r.gauss(0, 0.05)  # fast drop, then flat
    >>> gn = lambda s: 3.0 if s < 10 else 0.1
    >>> out = [a for s in range(200) for a in eng.update(Record(s, loss(s), grad_norm=gn(s), lr=0.03))]
    >>> [(a.kind, a.step, a.action.params, a.evidence["restart_step"]) for a in out if a.detector == "early_stall"]
    [('grad_vanishing', 64, {'factor': 0.1}, 0)]
    """

    name = "early_stall"
    kind = "grad_vanishing"
    static_screen = True

    def __init__(self, collapse: float = 6.0, stuck: float = 0.5, decayed: float = 0.5,
                 patience: int = 10, factor: float = 0.1, rise: float = 1.05,
                 stall: int = 20, drop: float = 0.9) -> None:
        super().__init__(collapse=collapse, stuck=stuck, decayed=decayed, patience=patience,
                         factor=factor, rise=rise, stall=stall, drop=drop)
        self._logc = math.log(collapse)
        self._logc_back = math.log(collapse / 2.0)
        self.start = 0  # grad-norm record count where the current qualifying stretch began
        self.last = -1
        self.best_at_alert = 0.0

    def get_state(self) -> dict[str, Any]:
        return {"start": self.start, "last": self.last,
                "best_at_alert": self.best_at_alert}

    def set_state(self, d: dict[str, Any]) -> None:
        self.start, self.last = d["start"], d["last"]
        self.best_at_alert = d["best_at_alert"]

    def screen(self, f):
        # the whole of ``_stuck`` vectorised (a row where it is False is a no-op for ``step``
        # while idle: the stretch counter resets on the next qualifying row by the ng gap);
        # the grad-norm test keeps a little slack, over-inclusion is harmless
        with np.errstate(invalid="ignore"):
            l0 = f.a("l0")
            peak = f.a("peak")
            ok = f.a("gok") & ~(f.a("mu") > f.a("mumax") - self._logc + 1e-9) & (f.a("nl") > 0)
            ok &= (l0 > 0.0) & (f.a("slow") >= self.stuck * l0) & (f.a("worst") <= self.rise * l0)
            ok &= f.a("best") <= self.drop * l0
            ok &= f.a("step") - f.a("best_step") >= self.stall
            ok &= ~(f.a("lrok") & (peak == peak) & (f.a("lr") < self.decayed * peak))
        return ok

    def _stuck(self, f, i: int) -> bool:
        step, nl = f.step[i], f.nl[i]
        if f.mu[i] > f.mumax[i] - self._logc or nl == 0 or step - f.best_step[i] < self.stall:
            return False
        # ... and as many loss records: the steps since the best, in the log's mean gap
        if (step - f.best_step[i]) * (nl - 1) < self.stall * (step - f.l0_step[i]):
            return False
        l0 = f.l0[i]
        if not (l0 > 0.0 and f.slow[i] >= self.stuck * l0 and f.worst[i] <= self.rise * l0
                and f.best[i] <= self.drop * l0):
            return False
        if f.lrok[i]:
            peak = f.peak[i]
            if peak == peak and f.lr[i] < self.decayed * peak:
                return False
        return True

    def step(self, f, i: int) -> None:
        if not f.gok[i]:
            return
        step = f.step[i]
        if self.alert is not None:
            if f.mu[i] > f.mumax[i] - self._logc_back:
                self.close_episode(step, "grad-norm back near its peak level")
            elif f.nl[i] > 0 and f.fast[i] >= 0.9 * f.l0[i]:
                self.close_episode(step, "the loss is back near its first value (a restart)")
            elif f.nl[i] > 0 and f.best[i] < 0.95 * self.best_at_alert:
                self.close_episode(step, f"the loss moved on ({fmt(f.best[i])})")
            return
        if not self._stuck(f, i):
            return
        ng = f.ng[i]
        if self.last != ng - 1:
            self.start = ng
        self.last = ng
        n = ng - self.start + 1
        if n < self.patience:
            return
        self.best_at_alert = f.best[i]
        restart = f.l0_step[i]
        ev = {"grad_norm": f.gn[i], "peak_typical": math.exp(f.mumax[i]),
              "typical": math.exp(f.mu[i]), "loss_level": f.slow[i], "first_loss": f.l0[i],
              "consecutive": n, "restart_step": int(restart)}
        if f.lrok[i]:
            ev["lr"] = f.lr[i]
        self.open_episode(
            step, "warning",
            f"stuck early: the grad-norm fell to {fmt(math.exp(f.mu[i] - f.mumax[i]))}x its peak "
            f"level while the loss sits at {fmt(f.slow[i])}, {fmt(100 * f.slow[i] / f.l0[i])}% of "
            "its first value, at a large LR",
            ev,
            Action("scale_lr", {"factor": self.factor},
                   f"Training stalled right after a fast start at a large LR (no warm-up?): cut the "
                   f"LR x{fmt(self.factor)} and restart from step {restart} (or add warm-up)."))
