"""A dead run: the network stopped learning (its loss is frozen, or sits at chance level).

Each rule lives in a module of :mod:`losswatch.detectors.dead_rules`, which states its condition,
its parameters (with the measurement that set each default), an example and references; this
module holds the detector: its parameters, state, order, advice and resolution.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from . import copies
from .base import Detector, fmt
from .dead_rules import Why, at_chance, collapsed, evaluations_at_chance, flat_start, frozen, weights_frozen, zero_start
from .dead_rules.at_chance import CHANCE_CLASSES, CHANCE_LEVELS, chance_level
from .dead_rules.frozen import same_4_digits
from .dead_rules.weights_frozen import exact_repeat
from .lost import blew_up
from .types import Action

__all__ = ["CHANCE_CLASSES", "CHANCE_LEVELS", "DeadDetector", "Why", "chance_level", "exact_repeat",
           "same_4_digits"]

#: the rules read on an evaluation and on a loss record, each in the order its verdict wins
#: (flat_start reads the evaluations only to end its run: it gives no verdict on one)
_EVALUATION_RULES = (frozen, weights_frozen, evaluations_at_chance, flat_start)
_LOSS_RULES = (zero_start, collapsed, frozen, at_chance, flat_start)


class DeadDetector(Detector):
    """The loss stopped moving: a network that no longer learns (saturated units, an LR far off,
    a data or label bug). Fires from the first records it can see it in.

    Every rule sees every record (it keeps its own run) but the lines a logger wrote again
    (:mod:`~losswatch.detectors.copies`: told by the training loss, runs are counted in
    measurements; a log of evaluations only is read line by line); while no episode is
    open the first verdict in this order raises the alert. On an evaluation: ``frozen`` (the validation loss the
    same to four significant digits), ``weights_frozen`` (separate evaluations the same to six),
    ``evaluations_at_chance`` (evaluations at ln(k), the training loss there too or far above
    it; evaluations at ln(k) itself whatever the training loss). On a loss record:
    ``zero_start`` (exactly 0 from the first record), ``collapsed`` (constant at or above the
    first loss, well above a loss the run already reached), ``frozen`` (the loss the same to four
    significant digits; to six on three records, at or above the first loss, after it moved),
    ``at_chance`` (the loss at ln(k) without new lows; at ln(k) itself after coming from another
    level, or from a first loss at chance with its evaluations at ln(k) too; or within 0.05 % of
    ln(k) on fewer records), ``flat_start`` (every loss since the first within the chance band;
    fewer records within half of it). An evaluation's verdict wins
    over a loss record's on the same row.

    **warning**, kind ``dead``. Action by evidence: when the loss had blown up (its level reached
    ``blowup`` x the first loss) or collapsed (back at or above the first loss after its raw
    best was ``collapse_drop`` below it) before it froze, or ``collapsed`` found it frozen after a
    rise (at or above the first loss, ``collapse_drop`` above its raw best, its evaluations
    frozen with it), the LR saturated the units:
    ``scale_lr`` x``factor``, restarting from a checkpoint before the blow-up. Otherwise
    ``stop``: check the data (labels all one class?), the loss, the initialisation, and whether
    the LR is far off; ``none`` where the rule's evidence is thin (``flat_start``: a few flat
    records are also what the end of a converged run prints), with the same checks. Resolves
    once the loss has moved off the frozen value or chance level (``rearm`` records; the
    evaluations, for the rules read on them).

    Parameters
    ----------
    All keyword parameters of the rules, each documented once, in the module of the rule it
    belongs to (``rule_modules`` lists them; docs/detectors.md shows them below this entry):
    ``frozen_records``, ``unlearned_records`` (frozen); ``lr_off`` (weights_frozen); ``chance_records``,
    ``exact_chance_records``, ``close_chance_records``, ``chance_band`` (at_chance); ``val_chance_band``
    (evaluations_at_chance); ``collapse_records``, ``collapse_drop`` (collapsed);
    ``flat_start_records``, ``flat_start_close_records`` (flat_start); ``zero_records`` (zero_start).
    Shared: ``blowup`` 2 (a loss level this many times the first loss before it froze is a
    blow-up), ``factor`` 0.1 (the LR cut advised after a blow-up or a collapse) and ``rearm`` 3
    (records off the dead value that close the episode).

    Examples
    --------
    A 10-class model that starts at chance, ln(10), and learns is not dead; one that stays there is:

    >>> from losswatch.detectors.base import drive
    >>> from losswatch.detectors.types import Record
    >>> learns = [2.3026, 2.3025, 2.3026, 2.25, 2.1, 1.9, 1.7, 1.55, 1.4, 1.3]
    >>> drive(DeadDetector(), [Record(s, x) for s, x in enumerate(learns)])
    []
    >>> stays = [2.3026, 2.3025] * 5
    >>> [(a.kind, a.step, a.action.type) for a in drive(DeadDetector(), [Record(s, x) for s, x in enumerate(stays)])]
    [('dead', 3, 'stop')]

    Each rule module shows its own case (ln 2 in :mod:`.dead_rules.at_chance`; a collapse after
    learning, in :mod:`.dead_rules.collapsed`, gets the LR cut instead of the stop).

    References
    ----------
    runmedic (loss near ln(k) = uniform over k classes); SageMaker Debugger's "loss not
    decreasing" and "stalled training" rules; Keras and PyTorch forum threads "loss stuck at
    0.6931 / 2.3026". Corpus logs of each rule: in its module.
    """

    name = "dead"
    kind = "dead"
    rule_modules: ClassVar[tuple] = (frozen, weights_frozen, at_chance, evaluations_at_chance, collapsed,
                                      flat_start, zero_start)

    def __init__(self, frozen_records: int = 6, chance_records: int = 6, chance_band: float = 0.002,
                 val_chance_band: float = 0.015, collapse_records: int = 5, collapse_drop: float = 0.05,
                 lr_off: float = 0.01, blowup: float = 2.0, factor: float = 0.1, rearm: int = 3,
                 flat_start_records: int = 6, zero_records: int = 2, exact_chance_records: int = 3,
                 unlearned_records: int = 3, close_chance_records: int = 4,
                 flat_start_close_records: int = 5) -> None:
        super().__init__(frozen_records=frozen_records, chance_records=chance_records,
                         chance_band=chance_band, val_chance_band=val_chance_band,
                         collapse_records=collapse_records, collapse_drop=collapse_drop, lr_off=lr_off,
                         blowup=blowup, factor=factor, rearm=rearm, flat_start_records=flat_start_records,
                         zero_records=zero_records, exact_chance_records=exact_chance_records,
                         unlearned_records=unlearned_records, close_chance_records=close_chance_records,
                         flat_start_close_records=flat_start_close_records)
        # runs are keyed on record counts (the finite-loss count nl, the val count), so rows the
        # screen skips break a run exactly as they should
        self.fz_start = self.fz_last = -1  # frozen loss: nl at its start / at its last row
        self.fz_xstart = self.fz_xlast = -1  # the same, for the run frozen to six digits
        self.fz_xcur = self.fz_xmax = 1  # records of that run; of the longest one before it
        self.vp_n, self.vp_train = 0, math.nan  # frozen pair: the evaluations in a row with both
        # columns unchanged, and the training loss at the last evaluation
        self.ch_level = -1.0  # chance level of the current run
        self.ch_start = self.ch_last = -1
        self.ch_rbest = math.inf  # raw best on the run's previous record, and the record ordinal
        self.ch_improved = -1  # (nl) of its last real improvement: a dead run makes no new lows
        self.ch_exact = 0  # records in a row at ln(k) itself
        self.ch_close = 0  # records in a row within the close band of ln(k)
        self.v_prev = math.nan  # last finite val loss and the run of equal ones
        self.v_first = math.nan  # the first finite val loss and its step
        self.v_first_step = -1
        self.v_n = 0
        self.v_rec = -1  # the record ordinal of the last evaluation (or of a line that copied it)
        self.v_exact = 0  # weights frozen: the run of separate evaluations with the same six digits
        self.vc_level = -1.0  # evaluations at chance: their level, the run's length, its lowest
        self.vc_n = 0  # value and the run position of its last new low
        self.vc_low = math.inf
        self.vc_improved = 0
        self.vx_level, self.vx_n = -1.0, 0  # evaluations at ln(k) itself
        self.vb_level, self.vb_n = -1.0, 0  # evaluations no better than chance: their level, the
        self.vb_v, self.vb_fall = math.nan, math.inf  # run's length; the last separate evaluation,
        self.vb_slow = 0  # its fall and the falls in a row that slowed
        self.vb_low, self.vb_since = math.inf, 0  # the lowest separate evaluation, and those since
        self.vb_tlow, self.vb_tsince = math.inf, 0  # the training loss's lowest at them, and those since
        self.vs_level, self.vs_n = -1.0, 0  # evaluations near one ln(k), values of their own
        self.cl_last = -1  # collapsed: nl of the last loss at or above the first one, and the
        self.cl_vals: list[float] = []  # last collapse_records of them in a row, and the
        self.cl_evals: list[tuple[int, float]] = []  # evaluation each saw (count, last value)
        self.fs_alive = True  # flat from the start: the band of every loss since the first,
        self.fs_lo, self.fs_hi, self.fs_n = math.inf, -math.inf, 0  # while no loss left it
        self.fs_new = 0  # the records of those with a value of their own
        self.zs_alive = True  # zero from the start: no loss but 0 yet
        self.moved = 0  # records off the dead value since the episode opened
        # lines a logger writes more than once (copies)
        self.cp_run, self.cp_k, self.cp_guess, self.cp_odd, self.cp_copies = 0, 0, 0, 0, 0

    #: state fields and their values before any record (states saved before a field existed
    #: start it afresh)
    _FRESH: ClassVar[dict[str, Any]] = {
        "fz_start": -1, "fz_last": -1, "fz_xstart": -1, "fz_xlast": -1, "fz_xcur": 1, "fz_xmax": 1,
        "vp_n": 0, "vp_train": math.nan,
        "ch_level": -1.0, "ch_start": -1, "ch_last": -1, "ch_rbest": math.inf,
        "ch_improved": -1, "ch_exact": 0, "ch_close": 0, "v_prev": math.nan, "v_first": math.nan, "v_first_step": -1, "v_n": 0,
        "v_rec": -1, "v_exact": 0,
        "vc_level": -1.0, "vc_n": 0, "vc_low": math.inf, "vc_improved": 0,
        "vx_level": -1.0, "vx_n": 0, "vb_level": -1.0, "vb_n": 0, "vb_v": math.nan,
        "vb_fall": math.inf, "vb_slow": 0, "vb_low": math.inf, "vb_since": 0, "vb_tlow": math.inf,
        "vb_tsince": 0, "vs_level": -1.0, "vs_n": 0,
        "cl_last": -1, "cl_vals": [], "cl_evals": [],
        "fs_alive": True, "fs_lo": math.inf, "fs_hi": -math.inf, "fs_n": 0, "fs_new": 0, "zs_alive": True, "moved": 0,
        "cp_run": 0, "cp_k": 0, "cp_guess": 0, "cp_odd": 0, "cp_copies": 0}

    def get_state(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self._FRESH}
        d["cl_vals"] = list(self.cl_vals)
        d["cl_evals"] = list(self.cl_evals)
        return d

    def set_state(self, d: dict[str, Any]) -> None:
        # a state saved before flat_start or zero_start existed belongs to a run past its first
        # records
        d = {"fs_alive": False, "zs_alive": False, "cp_k": 1, **d} if d else d
        for k, fresh in self._FRESH.items():
            v = d.get(k, fresh)
            setattr(self, k, list(v) if isinstance(v, list) else v)

    def screen(self, f):
        with np.errstate(all="ignore"):
            loss_rows = frozen.screen(self, f) | at_chance.screen(self, f) | collapsed.screen(self, f)
            # the rules of a run's first records cost nothing once their run has ended
            if self.fs_alive:
                loss_rows |= flat_start.screen(self, f)
            if self.zs_alive:
                loss_rows |= zero_start.screen(self, f)
            if self.cp_k != 1:  # a copy must be counted, even where no rule could fire
                loss_rows |= copies.screen(self, f)
            return (f.a("lok") & loss_rows) | f.a("vok")

    def step(self, f, i: int) -> None:
        lok, vok = f.lok[i], f.vok[i]
        if not (lok or vok):
            return
        if lok and self.cp_k != 1 and copies.observe(self, f, i):  # cp_k 1: each line is a measurement
            # a line the logger wrote again is no new measurement of the loss, nor of the
            # evaluation it carries unchanged: the line is that evaluation's record (so that the
            # next evaluation is separate only after a record without one, as after the
            # original line), one notion for every rule read on evaluations
            if not vok:
                return
            if f.val[i] == self.v_prev:
                self.v_rec = f.rec[i]
                return
            lok = False
        if self.alert is not None:
            # an episode on thin evidence (no action) goes on reading the rules: a stronger
            # verdict on a later record gives it that verdict's action
            if not self.alert.evidence.get("sure", True):
                why = self._verdict(f, i, lok, vok)
                if why is not None and why.sure:
                    self._open(f, i, why)
                    return
            self._maybe_resolve(f, i, lok, vok)
            return
        why = self._verdict(f, i, lok, vok)
        if why is not None:
            self._open(f, i, why)

    def _verdict(self, f, i: int, lok: bool, vok: bool) -> Why | None:
        """Every rule sees the record (each keeps its run; ``lok`` False on a copied loss line
        whose evaluation is new); the first verdict wins."""
        found: list[Why | None] = []
        if vok:
            prev, self.v_prev = self.v_prev, f.val[i]
            found += [rule.evaluation(self, f, i, prev) for rule in _EVALUATION_RULES]
            self.v_rec = f.rec[i]  # the rules read the record of the evaluation before as d.v_rec
        if lok:
            found += [rule.observe(self, f, i) for rule in _LOSS_RULES]
        return next((w for w in found if w is not None), None)

    def _restart_with_cut(self, what: str, since: str) -> Action:
        """The advice for a network the LR saturated: ``what`` happened to its loss, restart from
        before ``since`` with the LR cut."""
        return Action("scale_lr", {"factor": self.factor},
                      f"The network stopped learning after {what}, as when the LR saturates the units. "
                      f"Restart from a checkpoint before {since} with the LR cut {fmt(1 / self.factor)}x.")

    def _open(self, f, i: int, why: Why) -> None:
        """Raise the episode for ``why``, or give an open one on thin evidence its verdict."""
        step, l0 = f.step[i], f.l0[i]
        text, value = why.text, why.value
        ev: dict[str, Any] = {"value": value, "first_loss": l0}
        if not why.sure:
            ev["sure"] = False
        if why.column != "loss":
            ev["watch"], ev["off"] = why.column, why.off
        if why.rose:  # collapsed: the loss rose from its start and froze at why.value
            ev["rose_from"] = f.rbest[i]
            act = self._restart_with_cut(f"its loss rose from {fmt(f.rbest[i])} to {fmt(value)}, above "
                                         f"where it started ({fmt(l0)})", "the rise")
        elif l0 == l0 and blew_up(f.worst[i], l0, self.blowup):
            ev["blew_up_to"] = f.worst[i]
            act = self._restart_with_cut(f"its loss blew up to {fmt(f.worst[i])} (it started at {fmt(l0)})",
                                         "the blow-up")
        elif f.lok[i] and f.loss[i] >= l0 and collapsed.lost_progress(self, f, i):
            ev["collapsed_from"] = f.rbest[i]
            act = self._restart_with_cut(f"it lost all its progress: the loss fell to {fmt(f.rbest[i])}, then "
                                         f"came back above where it started ({fmt(l0)})", "the rise")
        elif why.sure:
            act = Action("stop", {}, why.checks or "The network is not learning: a constant loss means a "
                         "constant output. Stop and check the data (are the labels all one class?), the "
                         "loss function and the initialisation; an LR far too high or too low does it too.")
        else:
            act = Action("none", {}, "If these are the run's first steps, the network is not learning: "
                         "check the data (are the labels all one class?), the loss function and the "
                         "initialisation, and whether the LR is far off. The last lines of a converged "
                         "run look the same: then nothing is wrong.")
        self.moved = 0
        dead = "is dead" if why.sure else "may be dead"
        if self.alert is not None:
            self.update_episode(step, message=f"run {dead} at step {step}: {text}", evidence=ev, action=act)
        else:
            self.open_episode(step, "warning", f"run {dead} at step {step}: {text}", ev, act)

    def _maybe_resolve(self, f, i: int, lok: bool, vok: bool) -> None:
        """``lok`` and ``vok`` False on a copied line: a copy is no record off the dead value."""
        assert self.alert is not None  # called while an episode is open
        ev = self.alert.evidence
        dead = ev.get("value", math.nan)
        if ev.get("watch") == "val_loss":  # an evaluation rule: the evaluations tell
            if not vok:
                return
            x, off, what = f.val[i], ev["off"], "validation loss"
        else:
            if not lok:
                return
            x, off, what = f.loss[i], max(2.0 * self.chance_band * abs(dead), 1e-12), "loss"
        if abs(x - dead) > off:
            self.moved += 1
            if self.moved >= self.rearm:
                self.close_episode(f.step[i], f"{what} moving again ({fmt(x)})")
                for rule in self.rule_modules:
                    rule.forget(self)
        else:
            self.moved = 0
