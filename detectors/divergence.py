"""Divergence: the loss runs away from its best and keeps going."""

from __future__ import annotations

from typing import Any

import numpy as np

import math

from .base import Detector, fmt
from .features import lr_ramping
from .lost import blew_up, lost_after_blowup, stuck_at_start
from .progress import LEVEL_SHARE, RAW_SHARE, _pratio, _ratio, pratio_arr, ratio_arr
from .spike import is_spike, spike_screen
from .types import Action

class DivergenceDetector(Detector):
    """The loss rose well above its best and is still rising (or got stuck after blowing up):
    cut the LR.

    ``best`` is the running minimum of the winsorised loss level (``features.slow``), so a
    lucky low batch does not set the bar; "x times best" is measured by :func:`_pratio`
    (against the progress made when the loss has fallen far: see LEVEL_SHARE, RAW_SHARE).
    Eight ways to fire, all with the action ``scale_lr`` x``factor`` (0.1: the classic first
    step, AutoTrainer's first repair). The severity and the words say what the data shows:

    - **critical**, "loss diverging" / "run lost": the loss and its level are at or above the
      first loss (everything the run learnt is undone, or it blew up before learning), or the
      rule is 6 or 7;
    - **warning**, "LR too high, the loss is unstable ... the run is not lost": the run-away
      still holds part of the progress (below the first loss). Cutting the LR is right, stopping
      the run is not: the benchmark's too-high runs that end stably include such runs. The same
      alert escalates to critical (event ``escalated``) if the loss and its level then climb back
      above the first loss.

    1. *Run-away streak* (decides from a handful of points): ``streak`` consecutive rises of the
       raw loss starting from a normal value (the loss before the streak <= ``base_ratio`` x
       best, or within ``prev_z`` noise units of the level when no big spike happened in the
       last ``spike_memory`` records: not from inside an excursion), the latest >=
       ``streak_ratio`` x best and >= (1 + ``streak_rise``) x the loss before the streak. Noise
       guards: the loss before the latest is ``prev_z`` noise units above the level (two
       elevated points, so noise then one data spike is no streak: the 1.5B speedrun logs have
       ~100 spikes) and the latest ``streak_z`` units (speedrun 1.5B step 5818, a 2-step
       excursion, is 7 units out; BLOOM-104B exp2 is 28, the practitioner's 2.5, 2.4, 2.6, 3.1,
       4.2 is 34 and fires at 4.2, before its NaN). The grad-norm is the early warning: when it
       is >= ``gn_warn`` x its usual level on this record and was >= half that on the previous
       one (an explosion builds up; a bad batch's gradient jumps on its own step only), 1 and 3
       noise units suffice, and two rises are enough once they reach ``explode_ratio`` x best
       (an RNN at 10x LR shows it 2 steps before the loss runs away; SGD at 100x LR is lost by
       its third step). An LR ramping up on that very record (:func:`lr_ramping`: warm-up,
       one-cycle before its peak) is the same kind of corroboration: two rises to
       ``explode_ratio`` x best and 3 noise units (warm-up x100 least-squares runs swing
       0.7 -> 2.2 -> 4.5 while the LR climbs; the noise measured on the way up grows with the LR,
       so 10 units came 5-17 steps late).
    2. *Blow-up with the grad-norm*: loss >= ``gn_ratio`` x best while the grad-norm is
       >= ``gn_abs`` and at least doubled since the previous record. Grad-norms of 1e4-1e6 are
       what BLOOM-104B logged while diverging (healthy runs log 0.1-10); the doubling requirement
       keeps a run that merely lives at a huge grad-norm (skipped fp16 steps repeat the same
       value) from firing on a loss spike.
    3. *Sustained*: the loss level (``slow``) stays >= ``level_ratio`` x best for ``sustain``
       consecutive records, the short-term average is not falling back (``fast >= slow``) and
       is still >= ``keep`` x the highest it reached in this excursion (a spike that is decaying
       is recovering, not diverging). The LR explains the loss: while it still ramps up
       (warm-up, one-cycle: rising, no reversal yet) ``sustain_warmup`` records are enough
       (BLOOM-104B diverged at the end of warm-up; the benchmark's warm-up/one-cycle x100 runs
       are lost mid-ramp); while the schedule is already cutting it, ``sustain_decay``; under a
       cyclic LR going up (>= 2 reversals), never (CLR/SGDR raise the loss by design). An
       excursion that begins within ``spike_memory`` records of a big spike waits
       ``sustain_after_spike`` records (BLOOM-176B's spike recovered in ~30 iterations; the
       benchmark's bad-batch excursions take up to ~100, its own recovery window), unless its
       level is at or above ``above_start`` x the first loss: worse than the untrained model is
       not a bad batch's aftermath (held-out RNNs at 10x LR spiked once, then sat at 3-4x the
       first loss and waited 200 steps for the lost-run rule).
    4. *The LR explains a spike*: a loss spike (the spike detector's rule) within
       ``after_jump`` records of the LR rising >= ``lr_jump`` x in one step: the new LR, not the
       data, made the loss jump (benchmark lr_jump runs: the spike is the first sign, the run is
       lost a step later).
    5. *Spikes keep coming*: the ``cluster``-th loss spike within ``cluster_window`` records. One
       spike is a bad batch (no LR action); three in 50 records is instability that ends in
       divergence (the benchmark's cyclic/one-cycle x10 CNNs spike ever more often before dying;
       llm-foundry's KillLossSpike uses the same "repeated spikes -> lower the LR" logic). The
       GPT-2 speedrun logs' data spikes come in pairs at most (918 and 946). Rules 4 and 5 count
       only spikes that start from a normal record and reach ``level_ratio`` x best on the raw
       progress scale (a memorising model's loss jumping from 0.01 to 0.1 is noise, and every
       value inside an excursion looks like a spike to the lagging level); the count restarts
       when an episode resolves.
    6. *Lost after a blow-up*: no 1% gain of the trend for ``max(lost_patience,
       lost_patience_frac * steps so far)`` steps, the trend >= ``stuck`` x the first loss, and
       :func:`~losswatch.detectors.lost.lost_after_blowup` (above the first loss, or back at it
       after reaching ``blowup`` x it): the LR broke the model (dead units at chance level, the
       benchmark's Adam/SGD x100 MLPs and CNNs). Part of this detector, so a run that diverged
       and then got stuck is one episode.

    7. *Ten times the first loss, twice* (a fact that needs no history): a positive first loss
       and two records in a row >= ``first_ratio`` x it, from the third record on. A run does
       not recover its weights from there on its own (a fine-tune's loss 0.14 -> 25,238 ->
       75,835 in two logged steps; an LM at 10.9 logging 270 then 182); one such record alone
       can be a bad batch that the next step forgets (the benchmark's injected 40-60x spikes).
    8. *Run-away from the raw best*: two or more rises in a row to >= ``raw_ratio`` x the raw
       best (``features.rbest``: the lowest loss held for two records), the last two both
       undoing at least ``raw_undo`` of the progress made (first loss - raw best: one bad batch at
       the end of a noise wiggle is not a run-away), with the grad-norm up, the LR ramping or a
       third rise as corroboration. The EMA level lags a fast descent (a fine-tune
       logged every 50 steps falls 15 -> 1.4 in five points while the level is still ~11), so
       the rules above, measured against it, miss a blow-up that follows; the raw best does not.
       Only while the descent is fresh: the raw best was set in the later half of the run so far,
       and the slow trend (``features.trend``, ~50 records) is still >= ``level_ratio`` x it and
       above it by half the progress (LEVEL_SHARE). Where
       the trend has caught up, rule 1 judges the same rise in noise units (the benchmark's noisy
       least-squares runs swing 3x their lowest value and recover); and not within
       ``spike_memory`` records of a big spike (the aftermath of a bad batch is rule 3's call).

    The episode resolves once both the loss level and its 2-record average have stayed below
    ``resolve_ratio`` x best for ``rearm`` consecutive records (the winsorised level alone lags a
    blow-up; a relapse within that window is the same episode, not a new alert). A *lost* episode
    (rule 6) or one that went past 10x its first loss (rule 7) also needs the trend back below
    ``stuck`` x the first loss: a model dead at chance
    sits at its best, which is where it started, and "back near its best" would close and re-open
    the same episode every ``rearm`` records.

    *Escalation* (same episode, same alert id): when the LR the run reports has dropped to
    <= ``lr_followed`` x the LR at which the advice was given (the cut was made) and, after
    ``settle`` records at the lower LR, the level is back above ``level_ratio`` x best for
    ``sustain`` records and not falling, the alert is updated with another cut
    (``evidence["escalation"]`` counts, at most ``max_escalations``). See :meth:`_escalate`.

    Parameters
    ----------
    factor : float, default 0.1
    streak : int, default 3
    streak_ratio : float, default 1.3
    streak_rise : float, default 0.25
    base_ratio : float, default 1.25
    prev_z : float, default 3.0
    streak_z : float, default 10.0
    gn_ratio : float, default 1.5
    gn_abs : float, default 1e4
    level_ratio : float, default 1.5
    sustain : int, default 10
    keep : float, default 0.7
    resolve_ratio : float, default 1.15
    gn_warn : float, default 5.0
    lr_jump : float, default 3.0
    after_jump : int, default 5
    cluster : int, default 3
    cluster_window : int, default 50
    explode_ratio : float, default 3.0
    spike_memory : int, default 30
    sustain_after_spike : int, default 100
    sustain_decay : int, default 30
    rearm : int, default 50
    lost_patience, lost_patience_frac, stuck, blowup, lost_min_records : default 200, 0.25, 0.9, 2.0, 20
    sustain_warmup : int, default 5
    above_start : float, default 1.5
        the benchmark labels' "lost: above 1.5x the start" (slow_progress's ``blowup`` applies
        it to the fast level's maximum; here it is the level now, for a positive first loss)
    first_ratio, raw_ratio, raw_undo : float, float, float, default 10, 3, 0.25 (rules 7 and 8)
    settle, lr_followed, max_escalations : int, float, int, default 30, 0.5, 2
        escalation: records at the lowered LR before judging the cut, the LR drop that counts
        as the advice taken, further cuts per episode
    spike_z, spike_rel, spike_min : float, float, int, default 6.0, 0.2, 5
        the spike rule used by rules 4 and 5 (the spike detector's defaults)

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

    def __init__(self, factor: float = 0.1, streak: int = 3, streak_ratio: float = 1.3,
                 streak_rise: float = 0.25, base_ratio: float = 1.25, prev_z: float = 3.0,
                 streak_z: float = 10.0, gn_ratio: float = 1.5, gn_abs: float = 1e4,
                 level_ratio: float = 1.5, sustain: int = 10, keep: float = 0.7,
                 resolve_ratio: float = 1.15, gn_warn: float = 5.0, lr_jump: float = 3.0,
                 after_jump: int = 5, cluster: int = 3, cluster_window: int = 50,
                 spike_z: float = 6.0, spike_rel: float = 0.2, spike_min: int = 5,
                 explode_ratio: float = 3.0, spike_memory: int = 30,
                 sustain_after_spike: int = 100, sustain_warmup: int = 5, rearm: int = 50,
                 sustain_decay: int = 30, lost_patience: int = 200,
                 lost_patience_frac: float = 0.25, stuck: float = 0.9, blowup: float = 2.0,
                 lost_min_records: int = 20, settle: int = 30, lr_followed: float = 0.5,
                 max_escalations: int = 2, above_start: float = 1.5, first_ratio: float = 10.0,
                 raw_ratio: float = 3.0, raw_undo: float = 0.25) -> None:
        super().__init__(factor=factor, streak=streak, streak_ratio=streak_ratio,
                         streak_rise=streak_rise, base_ratio=base_ratio, prev_z=prev_z,
                         streak_z=streak_z, gn_ratio=gn_ratio, gn_abs=gn_abs,
                         level_ratio=level_ratio, sustain=sustain, keep=keep,
                         resolve_ratio=resolve_ratio, gn_warn=gn_warn, lr_jump=lr_jump,
                         after_jump=after_jump, cluster=cluster, cluster_window=cluster_window,
                         spike_z=spike_z, spike_rel=spike_rel, spike_min=spike_min,
                         explode_ratio=explode_ratio, spike_memory=spike_memory,
                         sustain_after_spike=sustain_after_spike, sustain_warmup=sustain_warmup,
                         rearm=rearm, sustain_decay=sustain_decay, lost_patience=lost_patience,
                         lost_patience_frac=lost_patience_frac, stuck=stuck, blowup=blowup,
                         lost_min_records=lost_min_records, settle=settle,
                         lr_followed=lr_followed, max_escalations=max_escalations,
                         above_start=above_start, first_ratio=first_ratio, raw_ratio=raw_ratio,
                         raw_undo=raw_undo)
        self.esc_lr = -1.0  # LR when the episode's advice was last given (open / escalation)
        self.esc_n = 0  # escalations so far in this episode
        self.esc_hi_start = 0  # loss-record count at which the current high run after the cut began
        self.esc_hi_last = -1
        self.esc_drop = -1  # loss-record count of the first record at the lowered LR
        self.ok_since = -1  # loss-record count since which the run looks recovered
        self.gn_warn_log = math.log(gn_warn)
        self.hi_start = 0  # loss-record count at which the current run of high levels began
        self.hi_last = -1
        self.hi_peak = float("-inf")  # highest short-term loss in that run
        self.hi_after_spike = False  # that run of high levels began within spike_memory of a spike
        self.lr_jump_rec = -(10**9)  # record ordinal of the last LR jump
        self.spike_recs = [-(10**9)] * (cluster - 1)  # record ordinals of the last loss spikes

    def get_state(self) -> dict[str, Any]:
        return {"hi_start": self.hi_start, "hi_last": self.hi_last, "hi_peak": self.hi_peak,
                "hi_after_spike": self.hi_after_spike, "lr_jump_rec": self.lr_jump_rec,
                "ok_since": self.ok_since,
                "spike_recs": self.spike_recs, "esc_lr": self.esc_lr, "esc_n": self.esc_n,
                "esc_hi_start": self.esc_hi_start, "esc_hi_last": self.esc_hi_last,
                "esc_drop": self.esc_drop}

    def set_state(self, d: dict[str, Any]) -> None:
        self.hi_start, self.hi_last, self.hi_peak = d["hi_start"], d["hi_last"], d["hi_peak"]
        self.lr_jump_rec, self.spike_recs = d["lr_jump_rec"], d["spike_recs"]
        self.hi_after_spike = d["hi_after_spike"]
        self.ok_since = d["ok_since"]
        self.esc_lr = d.get("esc_lr", -1.0)  # states saved before escalation existed lack these
        self.esc_n = d.get("esc_n", 0)
        self.esc_hi_start = d.get("esc_hi_start", 0)
        self.esc_hi_last = d.get("esc_hi_last", -1)
        self.esc_drop = d.get("esc_drop", -1)

    # -- screens (conservative: NaN comparisons count as "maybe") ---------------------------------
    def screen(self, f):
        with np.errstate(all="ignore"):
            best = f.a("best")
            l0 = f.a("l0")
            streak = (f.a("up_n") >= min(self.streak, 2)) & \
                ~(pratio_arr(f.a("loss"), best, l0, RAW_SHARE) < self.streak_ratio)
            gn = f.a("gok") & ~(f.a("gn") < self.gn_abs) & \
                ~(ratio_arr(f.a("loss"), best) < self.gn_ratio)
            level = ~(pratio_arr(f.a("slow"), best, l0) < self.level_ratio)
            prev_lr = f.a("b_lrlast")
            lr_jump = f.a("lrok") & (prev_lr > 0.0) & ~(f.a("lr") < self.lr_jump * prev_lr)
            spikes = spike_screen(f, self.spike_z, self.spike_rel, self.spike_min) & \
                ~(pratio_arr(f.a("loss"), best, l0, RAW_SHARE) < self.level_ratio)
            step = f.a("step")
            need = np.maximum(self.lost_patience_frac * (step - f.a("l0_step")), self.lost_patience)
            trend = f.a("trend")
            lost = ((step - f.a("pstep")) >= need) & \
                (~(trend <= l0) | ~(f.a("worst") < self.blowup * np.abs(l0)))
            loss = f.a("loss")
            first = (l0 > 0.0) & ~(loss < self.first_ratio * l0)
            raw = (f.a("up_n") >= 2) & ~(loss < self.raw_ratio * f.a("rbest"))
            return f.a("lok") & (streak | gn | level | lr_jump | spikes | lost | first | raw)

    def active_screen(self, f):
        # rows where the recovery count can change: recovered rows (counted), and the first
        # not-recovered loss row after a recovered one (the count restarts there)
        with np.errstate(all="ignore"):
            best, l0, lok = f.a("best"), f.a("l0"), f.a("lok")
            ok = lok & ~(pratio_arr(f.a("slow"), best, l0) >= self.resolve_ratio) & \
                ~(pratio_arr(f.a("fast"), best, l0) >= self.resolve_ratio)
            # rows where the advice was followed (the LR is down): the escalation count runs there
            followed = np.zeros(f.n, dtype=bool)
            if self.esc_lr > 0.0 and self.esc_n < self.max_escalations:
                followed = lok & f.a("lrok") & ~(f.a("lr") > self.lr_followed * self.esc_lr)
            if self.alert is not None and self.alert.severity != "critical":
                # an unstable run's loss back at its first value: the warning turns critical
                followed = followed | (lok & (l0 > 0.0) & ~(f.a("loss") < l0) & ~(f.a("slow") < l0))
        rows = np.flatnonzero(lok)
        if len(rows) == 0:
            return ok
        ok_c = ok[rows]
        after_ok = np.concatenate(([True], ok_c[:-1]))  # the first loss row: state unknown here
        mask = np.zeros(f.n, dtype=bool)
        mask[rows[ok_c | after_ok]] = True
        return mask | followed

    # -- decision ----------------------------------------------------------------------------------
    def step(self, f, i: int) -> None:
        if not f.lok[i]:
            return
        x = f.loss[i]
        best = f.best[i]
        l0 = f.l0[i]
        step = f.step[i]
        slow = f.slow[i]
        if self.alert is not None:
            nl = f.nl[i]
            if self.alert.severity != "critical" and l0 > 0.0 and x >= l0 and slow >= l0:
                self._lost(f, i, x, best, l0)
            self._escalate(f, i, x, best, l0, slow, nl)
            if _pratio(slow, best, l0) < self.resolve_ratio and \
                    _pratio(f.fast[i], best, l0) < self.resolve_ratio and \
                    (self.alert.evidence.get("rule") not in ("lost", "first_loss") or
                     f.trend[i] < self.stuck * l0):
                if self.ok_since < 0:
                    self.ok_since = nl
                if nl - self.ok_since + 1 >= self.rearm:
                    self.close_episode(step, f"loss level back to {fmt(slow)} (best {fmt(best)}) "
                                             f"for {self.rearm} records")
                    self.ok_since = -1
                    # the spikes counted so far belong to this episode: a new one needs new spikes
                    self.spike_recs = [-(10**9)] * len(self.spike_recs)
            else:
                self.ok_since = -1  # a relapse: the same episode, not a new alert
            return
        nl = f.nl[i]
        if nl < 2:
            return
        lvl = _pratio(slow, best, l0)
        stalled = step - f.pstep[i] >= self.lost_patience
        if f.up_n[i] < 2 and lvl < self.level_ratio and \
                not x - f.b_slow[i] > self.spike_rel * abs(f.b_slow[i]) and \
                not (f.gok[i] and f.gn[i] >= self.gn_abs) and \
                not (f.lrok[i] and f.b_lrlast[i] > 0.0 and f.lr[i] >= self.lr_jump * f.b_lrlast[i]) and \
                not (l0 > 0.0 and x >= self.first_ratio * l0) and not stalled:
            return  # no rule can fire and no private state can change on this row
        rule = None
        rec = f.rec[i]
        g = f.gn[i]
        # the grad-norm rose far above its usual range: corroborates a rising loss
        # ... and was already rising on the record before (an explosion builds up; a bad batch's
        # gradient jumps on its own step only)
        gprev = f.b_glast[i]
        gn_up = f.gok[i] and f.ng[i] >= 3 and g > 0.0 and gprev > 0.0 and \
            math.log(g) - f.b_mu[i] >= self.gn_warn_log and \
            math.log(gprev) - f.b_mu[i] >= self.gn_warn_log - 0.6931471805599453
        # an excursion that starts right after a big spike gets a longer sustain (spikes recover
        # within ~30 records)
        after_spike = rec - self.spike_recs[-1] <= self.spike_memory
        up_n = f.up_n[i]
        base = f.up_base[i]
        pr = _pratio(x, best, l0, RAW_SHARE)
        # a cause besides the data corroborates a rising loss: the grad-norm exploding, or the
        # LR ramping up (warm-up, one-cycle: the loss noise grows with the LR, so 10 units of the
        # noise measured on the way up came too late on the benchmark's warm-up x100 runs)
        ramping = lr_ramping(f, i)
        caused = gn_up or ramping
        long_enough = up_n >= self.streak or (up_n >= 2 and caused and pr >= self.explode_ratio)
        if l0 > 0.0 and x >= self.first_ratio * l0 and f.b_lprev[i] >= self.first_ratio * l0 and nl > 2:
            rule = (f"has been over {fmt(self.first_ratio)}x the first loss ({fmt(l0)} at step "
                    f"{f.l0_step[i]}) for two records", "first_loss")
        rb = f.rbest[i]
        if rule is None and up_n >= 2 and rb > 0.0 and x >= self.raw_ratio * rb and \
                f.trend[i] >= self.level_ratio * rb and f.trend[i] - rb >= LEVEL_SHARE * (l0 - rb) and \
                2 * (f.rbest_step[i] - f.l0_step[i]) > step - f.l0_step[i] and \
                f.b_lprev[i] - rb >= self.raw_undo * (l0 - rb) and (caused or up_n >= 3) and \
                not after_spike:
            why = " with the grad-norm up" if gn_up else (" while the LR warms up" if ramping else "")
            rule = (f"rose {up_n} records in a row{why} to {fmt(x / rb)}x the lowest loss it held "
                    f"({fmt(rb)} at step {f.rbest_step[i]})", "raw_runaway")
        if rule is None and long_enough and pr >= self.streak_ratio and \
                _ratio(x, base) >= 1.0 + self.streak_rise and \
                (_pratio(base, best, l0, RAW_SHARE) <= self.base_ratio or
                 (base - f.b_slow[i] <= self.prev_z * f.b_sd[i] and not after_spike)) and \
                f.b_lprev[i] - f.b_slow[i] >= (1.0 if gn_up else self.prev_z) * f.b_sd[i] and \
                x - f.b_slow[i] >= (self.prev_z if caused else self.streak_z) * f.b_sd[i]:
            why = " with the grad-norm up" if gn_up else (" while the LR warms up" if ramping else "")
            rule = (f"rose {up_n} records in a row{why}, {fmt(base)} -> {fmt(x)}", "streak")
        if f.lrok[i] and f.b_lrlast[i] > 0.0 and f.lr[i] >= self.lr_jump * f.b_lrlast[i]:
            self.lr_jump_rec = rec
        # a spike counts when it starts from a normal record (not a later jump inside the same
        # excursion, where the lagging level makes every value look like a spike)
        spiked = f.nl[i] > self.spike_min and _pratio(x, best, l0, RAW_SHARE) >= self.level_ratio and \
            f.b_lprev[i] - f.b_slow[i] <= self.prev_z * f.b_sd[i] and is_spike(
            x, f.b_slow[i], f.b_sd[i], f.b_lprev[i], self.spike_z, self.spike_rel, 0.5)
        if spiked:
            if rule is None and rec - self.lr_jump_rec <= self.after_jump:
                rule = (f"spiked right after the LR jumped (record {rec - self.lr_jump_rec} after)",
                        "lr_jump")
            if rule is None and rec - self.spike_recs[0] <= self.cluster_window:
                rule = (f"spiked {len(self.spike_recs) + 1} times in {rec - self.spike_recs[0]} "
                        "records: training is unstable", "spike_cluster")
            self.spike_recs = self.spike_recs[1:] + [rec]
        if rule is None and f.gok[i] and g >= self.gn_abs and _ratio(x, best) >= self.gn_ratio:
            gprev = f.b_glast[i]
            if f.ng[i] >= 2 and g >= 2.0 * gprev:
                rule = (f"jumped with the grad-norm at {fmt(g)} (was {fmt(gprev)})", "grad_norm")
        if lvl >= self.level_ratio:
            fast = f.fast[i]
            if self.hi_last != nl - 1:
                self.hi_start = nl
                self.hi_peak = fast
                self.hi_after_spike = after_spike
            elif fast > self.hi_peak:
                self.hi_peak = fast
            self.hi_last = nl
            n_hi = nl - self.hi_start + 1
            cyclic_rise = f.rev[i] >= 2 and f.lrdir[i] > 0
            if ramping:  # the LR is still ramping up: it, not a bad batch, drives the loss up
                need = self.sustain_warmup
            elif f.lrok[i] and f.lrdir[i] < 0 and f.rev[i] == 1:
                need = self.sustain_decay  # the schedule is already cutting the LR: give it time
            elif self.hi_after_spike and not (l0 > 0.0 and blew_up(slow, l0, self.above_start)):
                need = self.sustain_after_spike
            else:
                need = self.sustain
            if rule is None and n_hi >= need and fast >= slow and \
                    fast >= self.keep * self.hi_peak and not cyclic_rise:
                rule = (f"its level has stayed {fmt(_ratio(slow, best))}x above it for {n_hi} records",
                        "sustained")
        if rule is None and stalled and nl >= self.lost_min_records:
            since = step - f.pstep[i]
            p = self.lost_patience_frac * (step - f.l0_step[i])
            trend = f.trend[i]
            if since >= (p if p > self.lost_patience else self.lost_patience) and \
                    stuck_at_start(trend, l0, self.stuck) and \
                    lost_after_blowup(trend, l0, f.worst[i], f.sd[i], self.blowup):
                rule = (f"the loss blew up to {fmt(f.worst[i])} and has been stuck at {fmt(trend)} "
                        f"(it started at {fmt(l0)}) for {since} steps", "lost")
        if rule is None:
            return
        self._raise(f, i, x, best, _ratio(x, best), rule)

    def _escalate(self, f, i: int, x: float, best: float, l0: float, slow: float, nl: int) -> None:
        """The advice was followed and did not work: advise a further cut (same episode).

        Rule: the LR the run reports is <= ``lr_followed`` x the LR at which the advice was given
        (the cut was applied: by the Actor, a person or a scheduler), at least ``settle`` records
        have passed at that lower LR, and the loss level has again stayed >= ``level_ratio`` x
        best for ``sustain`` consecutive records with the short-term average not below the level
        (the sustained rule's evidence, not on its way down). Then the alert is updated
        (same id, ``evidence.escalation`` counts up, ``last_step`` moves) with another
        ``scale_lr`` x``factor``, at most ``max_escalations`` times per episode.

        WHY: one 10x cut is the classic first step, not always enough: an LR 30x-100x too high is
        still 3x-10x too high after it, and such a run blows up again or thrashes at a loss far
        above what it had reached (closed-loop bench, digits at 100x LR: one cut left it at
        0.43-0.53 held-out loss vs 0.12 tuned). Without an update the episode stays open and
        says nothing new, so whoever follows the advice never hears that it was not enough.
        Requiring the LR drop makes it causal and specific: the detector judges the remedy only
        after it was taken. ``settle`` (30 records: three times the level's span) gives the
        lower LR time to show its effect; a run that recovers after a cut has its level fall
        back towards its best within that window (the 30x runs do within ~10 records).
        """
        if self.esc_lr <= 0.0 or self.esc_n >= self.max_escalations or not f.lrok[i] or \
                f.lr[i] > self.lr_followed * self.esc_lr:
            return
        if self.esc_drop < 0:
            self.esc_drop = nl  # the first record at the lower LR
        if _pratio(slow, best, l0) < self.level_ratio:
            return
        if self.esc_hi_last != nl - 1:
            self.esc_hi_start = nl
        self.esc_hi_last = nl
        n = nl - self.esc_hi_start + 1
        if nl - self.esc_drop < self.settle or n < self.sustain or f.fast[i] < slow:
            return
        self.esc_n += 1
        self.esc_lr = f.lr[i]
        self.esc_hi_last = -1
        self.esc_drop = -1
        a = self.alert
        ratio = _ratio(slow, best)
        ev = dict(a.evidence)
        # best_step stays the last good step before the episode: everything trained since was
        # trained at an LR now known to be too high, so that is the state to restart from
        good = ev.get("best_step", f.best_step[i])
        # "rule" stays the one that opened the episode: it decides how the episode may close (a
        # lost run only once it learns again), and the escalation count says what happened since
        ev.update({"loss": x, "best": best, "best_since": f.best_step[i], "ratio": ratio,
                   "lr": f.lr[i], "escalation": self.esc_n})
        msg = (f"loss still diverging after the LR was cut to {fmt(f.lr[i])}: its level "
               f"{fmt(slow)} has stayed {fmt(ratio)}x its best ({fmt(best)} at step "
               f"{f.best_step[i]}) for {n} records")
        reason = (f"The LR was cut but the loss has not come back ({fmt(ratio)}x its best for {n} "
                  f"steps): the LR is still too high. Cut it another {fmt(1 / self.factor)}x "
                  f"(x{fmt(self.factor)}) and restart from a checkpoint near step {good}, before "
                  f"the trouble began.")
        self.update_episode(f.step[i], message=msg, evidence=ev,
                            action=Action("scale_lr", {"factor": self.factor}, reason))

    def _lost(self, f, i: int, x: float, best: float, l0: float) -> None:
        """An unstable run (a warning) whose loss and level are back at its first loss: every
        bit of progress is undone, the run is lost (critical, same episode and action)."""
        a = self.alert
        ev = {**a.evidence, "loss": x, "lost_step": f.step[i]}
        msg = (f"loss diverging: {fmt(x)} at step {f.step[i]} is back above its first loss "
               f"({fmt(l0)}); it was {fmt(_ratio(x, best))}x its best ({fmt(best)} at step "
               f"{f.best_step[i]}) when the alert was raised at step {a.step}")
        self.update_episode(f.step[i], severity="critical", message=msg, evidence=ev)

    def _raise(self, f, i: int, x: float, best: float, ratio: float, rule: tuple[str, str]) -> None:
        step = f.step[i]
        bstep = f.best_step[i]
        # the words use the lowest loss the run really held (the raw best) when it is lower than
        # the EMA level's best: after a fast descent the level is still far above the real values
        shown, shown_step = (f.rbest[i], f.rbest_step[i]) if 0.0 < f.rbest[i] < best else (best, bstep)
        shown_ratio = _ratio(x, shown)
        warm = lr_ramping(f, i)
        l0 = f.l0[i]
        lost = rule[1] in ("lost", "first_loss") or not (l0 > 0.0 and (x < l0 or f.slow[i] < l0))
        if rule[1] == "lost":
            msg = f"run lost at step {step}: {rule[0]}"
        elif lost:
            msg = (f"loss diverging: {fmt(x)} at step {step} is {fmt(shown_ratio)}x its best "
                   f"({fmt(shown)} at step {shown_step}) and {rule[0]}")
        else:
            msg = (f"LR too high, the loss is unstable: {fmt(x)} at step {step} is "
                   f"{fmt(shown_ratio)}x its best ({fmt(shown)} at step {shown_step}) and {rule[0]}; "
                   f"it is still below its first loss ({fmt(l0)}): the run is not lost")
        if lost:
            reason = (f"The loss is running away ({fmt(shown_ratio)}x its best). Cut the LR "
                      f"{fmt(1 / self.factor)}x (x{fmt(self.factor)}); if it does not come back within "
                      f"a few hundred steps, roll back to a checkpoint near step {shown_step}.")
        else:
            reason = (f"The LR is too high for this run: the loss jumps back up ({fmt(shown_ratio)}x "
                      f"its best) but still holds part of its progress. Cut the LR "
                      f"{fmt(1 / self.factor)}x (x{fmt(self.factor)}) and let the run go on; no "
                      f"need to stop it. If the loss climbs back to its first value, roll back "
                      f"to a checkpoint near step {shown_step}.")
        if warm:
            reason += " The LR is still warming up: a longer warm-up or a lower peak LR is the usual fix."
        ev: dict[str, Any] = {"loss": x, "best": best, "best_step": bstep, "ratio": ratio,
                              "rule": rule[1]}
        if f.gok[i]:
            ev["grad_norm"] = f.gn[i]
        if f.lrok[i]:
            ev["lr"] = f.lr[i]
        # the LR at which the advice is given: a later drop below lr_followed x it means it was taken
        self.esc_lr = f.lr[i] if f.lrok[i] and f.lr[i] > 0.0 else -1.0
        self.esc_n = 0
        self.esc_hi_last = -1
        self.esc_drop = -1
        self.open_episode(step, "critical" if lost else "warning", msg, ev,
                          Action("scale_lr", {"factor": self.factor}, reason))
