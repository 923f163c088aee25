"""Divergence: the loss runs away from its best and keeps going.

One detector, one episode per run-away, eight rules that can open it; the rules, the words of
the verdict, the escalation and the recovery each live in a module of
:mod:`losswatch.detectors.divergence_rules`, which states its condition, its parameters (with
the measurements that set them), an example and references. This module holds what they share:
the parameters, the state, and the order in which ``step`` asks them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .base import Detector
from .divergence_rules import (
    causes,
    climb,
    escalation,
    first_loss,
    grad_norm,
    lost,
    lr_jump,
    never_learnt,
    raw_runaway,
    recovery,
    spike_climbs,
    spike_cluster,
    spikes,
    streak,
    sustained,
    val_blowup,
    verdict,
)
from .features import Features, lr_ramping
from .progress import _pratio, _ratio
from .spike import SPIKE_MIN_RECORDS, SPIKE_REL, SPIKE_Z


class DivergenceDetector(Detector):
    """The loss rose well above its best and is still rising (or got stuck after blowing up):
    cut the LR.

    ``best`` is the running minimum of the winsorised loss level (``features.slow``), so a
    lucky low batch does not set the bar; the raw best (``features.rbest``) serves the rules
    that must not lag a fast descent. While no episode is open, each loss record goes through
    the rules in this order, and the first that holds raises the alert, with the action
    ``scale_lr`` x``factor`` (``evidence["rule"]`` names it):
    ``first_loss``, ``raw_runaway``, ``streak``, ``climb``, ``never_learnt``, ``spike_climbs``, ``lr_jump``,
    ``spike_cluster``, ``grad_norm``, ``sustained``, ``lost``; on a record without a training loss,
    ``val_blowup`` (one module each in :mod:`~losswatch.detectors.divergence_rules`).
    While it is open: ``verdict`` (an unstable run that climbs back to its first loss turns
    critical), ``escalation`` (a further cut when the advice was taken and did not work) and
    ``recovery`` (the episode closes).

    Parameters
    ----------
    All keyword parameters, each documented once, in the module of the rule it belongs to
    (``rule_modules`` lists them; docs/detectors.md shows them below this entry):
    ``factor`` (verdict); ``first_ratio`` (first_loss); ``raw_ratio``, ``raw_undo``,
    ``raw_fresh``, ``raw_z`` (raw_runaway); ``streak``, ``streak_ratio``, ``streak_rise``, ``base_ratio``,
    ``prev_z``, ``streak_z``, ``explode_ratio`` (streak); ``climb``, ``climb_z`` (climb);
    ``gn_warn``, ``gn_calm`` (causes); ``lr_jump``, ``after_jump`` (lr_jump); ``cluster``,
    ``cluster_window`` (spike_cluster); ``spike_z``, ``spike_rel``, ``spike_min``,
    ``spike_memory`` (spikes); ``gn_ratio``, ``gn_abs`` (grad_norm);
    ``level_ratio``, ``sustain``, ``keep``, ``sustain_warmup``, ``sustain_decay``,
    ``sustain_after_spike``, ``above_start`` (sustained); ``lost_patience``,
    ``lost_patience_frac``, ``stuck``, ``blowup``, ``lost_min_records`` (lost); ``val_ratio``
    (val_blowup);
    ``resolve_ratio``, ``rearm`` (recovery); ``settle``, ``lr_followed``, ``max_escalations``
    (escalation).

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> out = [a for s, x in enumerate([2.5, 2.4, 2.6, 3.1, 4.2]) for a in eng.update(Record(s, x))]
    >>> out[0].kind, out[0].step, out[0].action.params
    ('divergence', 4, {'factor': 0.1})

    References
    ----------
    BLOOM tr8-104B chronicles (divergence at the end of warm-up, grad-norm 1e5); llm-foundry
    KillLossSpike (consecutive high losses -> lower LR); AutoTrainer (LR x0.1 repair).
    """

    name = "divergence"
    kind = "divergence"
    static_screen = True
    #: The modules of its rules: those ``step`` tries, in its order, then those of an open
    #: episode, then the shared pieces (the detector reference lists them in this order).
    rule_modules: ClassVar[tuple] = (first_loss, raw_runaway, streak, climb, never_learnt, spike_climbs, lr_jump,
                                     spike_cluster, grad_norm, sustained, lost, val_blowup, verdict,
                                     escalation, recovery, causes, spikes)

    def __init__(self, factor: float = 0.1, streak: int = 3, streak_ratio: float = 1.3,
                 streak_rise: float = 0.25, base_ratio: float = 1.25, prev_z: float = 3.0,
                 streak_z: float = 10.0, gn_ratio: float = 1.5, gn_abs: float = 1e4,
                 level_ratio: float = 1.5, sustain: int = 10, keep: float = 0.7,
                 resolve_ratio: float = 1.15, gn_warn: float = 5.0, gn_calm: float = 1.5, lr_jump: float = 3.0,
                 after_jump: int = 5, cluster: int = 3, cluster_window: int = 50,
                 spike_z: float = SPIKE_Z, spike_rel: float = SPIKE_REL,
                 spike_min: int = SPIKE_MIN_RECORDS,
                 explode_ratio: float = 3.0, spike_memory: int = 30,
                 sustain_after_spike: int = 100, sustain_warmup: int = 5, rearm: int = 50,
                 sustain_decay: int = 30, lost_patience: int = 200,
                 lost_patience_frac: float = 0.25, stuck: float = 0.9, blowup: float = 2.0,
                 lost_min_records: int = 20, settle: int = 30, lr_followed: float = 0.5,
                 max_escalations: int = 2, above_start: float = 1.5, first_ratio: float = 10.0,
                 raw_ratio: float = 3.0, raw_undo: float = 0.25, raw_fresh: int = 10, raw_z: float = 5.0, climb: int = 5,
                 climb_z: float = 5.0, val_ratio: float = 3.0) -> None:
        super().__init__(factor=factor, streak=streak, streak_ratio=streak_ratio,
                         streak_rise=streak_rise, base_ratio=base_ratio, prev_z=prev_z,
                         streak_z=streak_z, gn_ratio=gn_ratio, gn_abs=gn_abs,
                         level_ratio=level_ratio, sustain=sustain, keep=keep,
                         resolve_ratio=resolve_ratio, gn_warn=gn_warn, gn_calm=gn_calm, lr_jump=lr_jump,
                         after_jump=after_jump, cluster=cluster, cluster_window=cluster_window,
                         spike_z=spike_z, spike_rel=spike_rel, spike_min=spike_min,
                         explode_ratio=explode_ratio, spike_memory=spike_memory,
                         sustain_after_spike=sustain_after_spike, sustain_warmup=sustain_warmup,
                         rearm=rearm, sustain_decay=sustain_decay, lost_patience=lost_patience,
                         lost_patience_frac=lost_patience_frac, stuck=stuck, blowup=blowup,
                         lost_min_records=lost_min_records, settle=settle,
                         lr_followed=lr_followed, max_escalations=max_escalations,
                         above_start=above_start, first_ratio=first_ratio, raw_ratio=raw_ratio,
                         raw_undo=raw_undo, raw_fresh=raw_fresh, raw_z=raw_z, climb=climb, climb_z=climb_z,
                         val_ratio=val_ratio)
        # the state of the rules (saved by get_state; each module says what its fields mean)
        # escalation: the LR when the episode's advice was last given, escalations so far, the run
        # of high levels after the cut, the loss-record count of the first record at the lower LR
        self.esc_lr = -1.0
        self.esc_n = 0
        self.esc_hi_start = 0
        self.esc_hi_last = -1
        self.esc_drop = -1
        self.ok_since = -1  # recovery: loss-record count since which the run looks recovered
        # sustained: the current run of high levels (where it began, was last seen, its peak, and
        # whether it began within spike_memory records of a counted spike)
        self.hi_start = 0
        self.hi_last = -1
        self.hi_peak = float("-inf")
        self.hi_after_spike = False
        self.lr_jump_rec = -(10**9)  # lr_jump: record ordinal of the last LR jump
        self.spike_recs = [-(10**9)] * (cluster - 1)  # spikes: record ordinals of the last counted ones
        self.spike_nl = -1  # spikes: loss-record count of the last counted spike
        self.spike_step = -1  # spikes: its step
        self.spike_top = math.nan  # spikes: the highest loss logged before it
        self.kick_rec = -(10**9)  # spikes: record ordinal and grad-norm of the last kick (a bad batch)
        self.kick_gn = math.inf
        self.kick_mu = -math.inf  # spikes: the grad-norm level (log) before the last kick
        self.vj_last = False  # val_blowup: the last evaluation (of a log of evaluations) jumped
        self.vj_back = False  # val_blowup: a jump has come back on the evaluation after it
        self.gn_warn_log = math.log(gn_warn)  # causes: gn_warn in log space (derived, not saved)
        self.gn_calm_log = math.log(gn_calm)  # causes: gn_calm in log space (derived, not saved)
        self.rises_needed = min(streak, 2)  # streak: the fewest rises it can fire on (derived)

    def get_state(self) -> dict[str, Any]:
        return {"hi_start": self.hi_start, "hi_last": self.hi_last, "hi_peak": self.hi_peak,
                "hi_after_spike": self.hi_after_spike, "lr_jump_rec": self.lr_jump_rec,
                "ok_since": self.ok_since,
                "spike_recs": self.spike_recs, "spike_nl": self.spike_nl,
                "spike_step": self.spike_step, "spike_top": self.spike_top, "kick_rec": self.kick_rec, "kick_gn": self.kick_gn,
                "kick_mu": self.kick_mu,
                "esc_lr": self.esc_lr, "esc_n": self.esc_n,
                "esc_hi_start": self.esc_hi_start, "esc_hi_last": self.esc_hi_last,
                "esc_drop": self.esc_drop, "vj_last": self.vj_last, "vj_back": self.vj_back}

    def set_state(self, d: dict[str, Any]) -> None:
        self.hi_start, self.hi_last, self.hi_peak = d["hi_start"], d["hi_last"], d["hi_peak"]
        self.lr_jump_rec, self.spike_recs = d["lr_jump_rec"], d["spike_recs"]
        self.hi_after_spike = d["hi_after_spike"]
        self.spike_nl = d.get("spike_nl", -1)  # states saved before spike_climbs lack these
        self.spike_step = d.get("spike_step", -1)
        self.spike_top = d.get("spike_top", math.nan)  # absent before it was kept: not asked
        # absent in states saved before kicks were told apart: no kick is remembered
        self.kick_rec, self.kick_gn = d.get("kick_rec", -(10**9)), d.get("kick_gn", math.inf)
        # absent in states saved before the level was kept: wait as those states did
        self.kick_mu = d.get("kick_mu", -math.inf)
        self.ok_since = d["ok_since"]
        self.esc_lr = d.get("esc_lr", -1.0)  # states saved before escalation existed lack these
        self.esc_n = d.get("esc_n", 0)
        self.esc_hi_start = d.get("esc_hi_start", 0)
        self.esc_hi_last = d.get("esc_hi_last", -1)
        self.esc_drop = d.get("esc_drop", -1)
        self.vj_last = d.get("vj_last", False)  # states saved before these: no jump seen
        self.vj_back = d.get("vj_back", False)

    # -- screens (conservative: NaN comparisons count as "maybe") ---------------------------------
    def screen(self, f: Features) -> np.ndarray:
        with np.errstate(all="ignore"):
            rows = first_loss.screen(self, f) | raw_runaway.screen(self, f) | streak.screen(self, f) | \
                lr_jump.screen(self, f) | spikes.screen(self, f) | grad_norm.screen(self, f) | \
                sustained.screen(self, f) | lost.screen(self, f) | climb.screen(self, f) | \
                never_learnt.screen(self, f)
            return (f.a("lok") & rows) | val_blowup.screen(self, f)

    def active_screen(self, f: Features) -> np.ndarray:
        with np.errstate(all="ignore"):
            return recovery.screen(self, f) | escalation.screen(self, f) | verdict.screen(self, f)

    # -- decision ----------------------------------------------------------------------------------
    def step(self, f: Features, i: int) -> None:
        if not f.lok[i]:
            # a record without a training loss: its validation loss may show the blow-up (a logged
            # NaN loss is the NaN detector's)
            if self.alert is None and not f.has_loss[i] and f.vok[i]:
                rule = val_blowup.check(self, f, i)
                if rule is not None:
                    verdict.raise_val_alert(self, f, i, rule)
            return
        x = f.loss[i]
        best = f.best[i]
        l0 = f.l0[i]
        step = f.step[i]
        slow = f.slow[i]
        nl = f.nl[i]
        if self.alert is not None:
            verdict.mark_lost(self, f, i, x, best, l0, slow)
            escalation.escalate(self, f, i, x, best, l0, slow, nl)
            recovery.track(self, f, i, step, best, l0, slow, nl)
            return
        if nl < 2:
            return
        up_n = f.up_n[i]
        b_slow = f.b_slow[i]
        lvl = _pratio(slow, best, l0)
        # the cheapest necessary part of each rule's condition, evaluated once: a row that meets
        # none stops here (most rows of a healthy run: no rule can fire and no rule's state can
        # change on them), and a rule whose part is not met is not asked (the hot path's calls
        # cost); each check still tests its whole condition
        rising = up_n >= self.rises_needed  # streak; raw_runaway asks for two rises as well
        high = lvl >= self.level_ratio  # sustained (its state changes on these rows)
        jumped = x - b_slow > self.spike_rel * abs(b_slow)  # a counted spike: lr_jump, spike_cluster
        huge_gn = f.gok[i] and f.gn[i] >= self.gn_abs  # grad_norm
        lr_jumped = f.lrok[i] and f.b_lrlast[i] > 0.0 and f.lr[i] >= self.lr_jump * f.b_lrlast[i]
        tenfold = l0 > 0.0 and x >= self.first_ratio * l0  # first_loss
        stalled = step - f.pstep[i] >= self.lost_patience  # lost
        risen = nl >= self.climb and x >= self.level_ratio * l0  # never_learnt
        if up_n < 2 and not (high or jumped or huge_gn or lr_jumped or tenfold or stalled or risen):
            return
        rec = f.rec[i]
        gn_up = rising and causes.grad_norm_building(self, f, i)
        ramping = lr_ramping(f, i)
        after_spike = rec - self.spike_recs[-1] <= self.spike_memory  # spikes.py: a bad batch's aftermath
        rule = first_loss.check(self, f, i, x, l0, nl) if tenfold else None
        if rule is None and up_n >= 2:
            rule = raw_runaway.check(self, f, i, x, l0, step, up_n, gn_up, ramping, after_spike)
        if rule is None and rising:
            rule = streak.check(self, f, i, x, best, l0, up_n, gn_up, ramping, after_spike)
        if rule is None and up_n >= self.climb:
            rule = climb.check(self, f, i, x, l0, up_n)
        if rule is None and risen:
            rule = never_learnt.check(self, f, i, x, l0, nl)
        if rule is None and self.spike_nl == nl - 1:
            rule = spike_climbs.check(self, f, i, x, best, l0)
        if lr_jumped:
            lr_jump.remember(self, rec)
        if jumped and spikes.counted(self, f, i, x, best, l0):
            if rule is None:
                rule = lr_jump.check(self, rec)
            if rule is None:
                rule = spike_cluster.check(self, rec, high)
            spikes.remember(self, f, i, rec, nl, step)
        if rule is None and huge_gn:
            rule = grad_norm.check(self, f, i, x, best)
        if high:
            n_hi = sustained.track(self, f, i, nl, after_spike)
            if rule is None:
                rule = sustained.check(self, f, i, best, l0, slow, n_hi, ramping)
        if rule is None and stalled and nl >= self.lost_min_records:
            rule = lost.check(self, f, i, step, l0)
        if rule is not None:
            verdict.raise_alert(self, f, i, x, best, _ratio(x, best), rule)
