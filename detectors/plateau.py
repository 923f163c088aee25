"""Plateau: the loss trend stopped improving; the LR says what kind of plateau it is."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import progress
from .base import Detector, fmt
from .features import lr_ramping
from .lost import lost_after_blowup, stuck_at_start
from .types import Action


class PlateauDetector(Detector):
    """The slow loss trend has not improved by ``features.plateau_eps`` (1%) for a long time.

    "Long": ``max(patience, patience_frac * step)`` steps, so a plateau is judged relative to how
    long the run has trained (ReduceLROnPlateau's fixed patience fires on every slow phase), and
    at least ``patience_records`` loss records: the trend is an EMA with a memory of ~50 records
    (``alpha_trend`` 0.02), so fewer records without a 1% gain say nothing, whatever the steps
    between them (a log thinned to every 10th row, or one that counts steps 7 at a time, must not
    turn a healthy warm-up into "the LR is too small").
    Then the LR explains what the plateau means:

    * LR decayed to <= ``decayed`` x its peak (end of a cosine / step schedule): **info**
      "converged", action none. Not an alarm.
    * little progress since the start (trend still >= ``stuck`` x the first loss) after the loss
      had shot up to >= ``blowup`` x the first loss, or above the first loss: not a plateau but a
      lost run, reported by the divergence detector (its ``lost`` rule); nothing here.
    * barely any progress since the start (trend still >= ``barely`` x the first loss), the
      loss quieter than ``noisy`` (a first loss drawn from a loss that jumps 10% or more per
      record does not say where the run started to within the band), the trend not above
      where it started nor climbed back
      above the raw best by ``given_back`` of the progress made down to it and by ``climb_z``
      noise units (``progress.climbed_back``: a too-small LR never pushes the loss back up; the
      oscillation detector's ``relapse`` rule reads a climb after an LR rise as an LR too
      high), and the grad-norm
      still >= ``gn_drop`` x its early level (a model that barely moves keeps its initial
      gradients; one at its noise floor has smaller ones, like the benchmark's healthy linear
      regressions, which start near their floor): **warning**, the LR is too small to move:
      ``scale_lr`` x``up``; not while the schedule is still raising the LR (a one-cycle
      run sits at its first loss while its LR climbs: judged once the ramp ends).
    * the loss is noisy at this level (MAD >= ``noisy`` x level, or zig-zagging): **info**, a
      lower LR may let it settle (``scale_lr`` x``down``). Not a warning: on the benchmark the
      healthy linear-regression runs sit at their noise floor at +-15% per step.
    * otherwise (progress was made, quiet, LR not decayed): **info**, a decay may help
      (``scale_lr`` x``down``), the classic ReduceLROnPlateau move. (Reading this case as "LR
      too low" instead was measured and rejected: see bench/results/detector-changelog.md.)

    The episode resolves when the trend improves again; an info plateau whose LR then decays
    below ``decayed`` x peak is updated to "converged".

    Parameters
    ----------
    patience : int, default 200
    patience_frac : float, default 0.25
    decayed : float, default 0.1
    noisy : float, default 0.1
        Relative noise (``features.sd`` / level) at and above which the loss is "noisy": the
        plateau is an info, and "barely below the first loss" is not judged (one draw of such a
        loss is no start level). On seeds 0-7 every LR-too-low run found sits at 0.2-0.4%; a
        healthy linear regression of seed 5 (warm-up + cosine, LR x10) at its noise floor,
        26% per record and 0.973x its first loss, was told "raise the LR x10".
    stuck : float, default 0.9
        Trend at or above this x the first loss after a blow-up: a lost run (the divergence
        detector's ``lost`` rule uses the same test and default). ``barely`` only narrows it: a
        ``barely`` below ``stuck`` has no effect.
    up : float, default 10.0
    down : float, default 0.3
    min_records : int, default 20
    patience_records : int, default 50
    blowup : float, default 2.0
    gn_drop : float, default 0.7
    given_back : float, default 0.5
        Half the progress given back: the benchmark labels' line for a lost run. A CS336 LR sweep
        (bench/real/histories/div__xiamishaonian111__cs336__lr-sweep-1e-1-metrics.csv) that
        climbed from 4.1 back to 4.8 as its warm-up passed the stable LR was told "raise the LR
        x10" before this test.
    barely : float, default 0.95
        The band under the first loss in which a flat trend says "the LR is too small to move
        it". On the benchmark (seeds 0-7) every LR-too-low run this finds sits at 0.971-0.996x
        its first loss when it fires; a run that has fallen 5% or more below its first loss has
        shown that its LR moves it, and a flat loss there is a floor. A t5-small summarization
        fine-tune (bench/real/histories/10844110__t5-summarization-demo__trainer-state.csv,
        healthy) starts near its floor, 1.996 -> 1.90 in its second record, and flattens at
        1.80 (0.90x): it was told "raise the LR x10" at 0.9.
    from_start : float, default 5.0
        "Barely below the first loss" is judged only on a log that begins where training began:
        its first loss at a step no later than this many mean logging gaps
        (``progress.logged_from_start``). A log that starts later (the second half of a
        finished run, an excerpt pasted from the middle, a resumed run) begins near its floor,
        and its slow tail is not an LR too small to move it: the second halves of the tune
        part's healthy GPT-2 speedruns, a T5 fine-tune and a CS336 LM were each told "raise the
        LR x10" before this test (bench/variants.py); a run logged from scratch prints
        its first loss at step 0, 1 or one logging interval. A log that starts later is still
        judged while its LR has never been lowered within it (a constant LR: the benchmark's
        too-low runs cut at their middle, bench/cadence.py); under a decaying schedule, or with
        no LR logged, its flat tail may be the schedule's.
    climb_z : float, default 4.0
        ... and by this many noise units (``features.sd``): the raw best of a flat run is its
        luckiest pair of records, 2-3.6 units below its mean for 10^3-10^5 records, so its
        trend sits that far above it by chance (a flat loss at a tiny LR, and cnn SGD at LR/100
        on the benchmark, 3.1 units at step 200, were no longer told to raise the LR without
        this test). The CS336 run's trend is 5.3 units above its best at its first plateau.

    Examples
    --------
    A loss that barely moves at a tiny LR:

    >>> import math
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> out = [a for s in range(400) for a in eng.update(Record(s, 2.5 + 0.003 * math.sin(s), lr=1e-6))]
    >>> [(a.kind, a.step, a.severity, a.action.params) for a in out]
    [('plateau', 200, 'warning', {'factor': 10.0})]

    A loss frozen from the first record is a dead run (dead.py), which asks to stop and check:
    the plateau is still reported, in the same incident, but its LR raise is withheld (one
    verdict per run, incidents.py):

    >>> eng = Engine("r")
    >>> out = [a for s in range(400) for a in eng.update(Record(s, 2.3, lr=1e-6))]
    >>> [(a.kind, a.step, a.severity, a.action.type) for a in out]
    [('dead', 5, 'warning', 'stop'), ('plateau', 200, 'warning', 'none')]

    References
    ----------
    torch ReduceLROnPlateau; trainpulse / SageMaker "loss not decreasing"; Smith, "Cyclical
    learning rates" (the LR explains the loss).
    """

    name = "plateau"
    kind = "plateau"
    static_screen = True

    def __init__(self, patience: int = 200, patience_frac: float = 0.25, decayed: float = 0.1,
                 noisy: float = 0.1, stuck: float = 0.9, up: float = 10.0, down: float = 0.3,
                 min_records: int = 20, blowup: float = 2.0, gn_drop: float = 0.7,
                 patience_records: int = 50, given_back: float = 0.5, climb_z: float = 4.0,
                 barely: float = 0.95, from_start: float = progress.FROM_START_GAPS) -> None:
        super().__init__(patience=patience, patience_frac=patience_frac, decayed=decayed,
                         noisy=noisy, stuck=stuck, up=up, down=down, min_records=min_records,
                         blowup=blowup, gn_drop=gn_drop, patience_records=patience_records,
                         given_back=given_back, climb_z=climb_z, barely=barely, from_start=from_start)
        self.gn_drop_log = math.log(gn_drop)

    def screen(self, f):
        step = f.a("step")
        since = step - f.a("pstep")
        need = np.maximum(self.patience_frac * (step - f.a("l0_step")), self.patience)
        return f.a("lok") & (since >= need) & (f.a("nl") - f.a("pnl") >= self.patience_records)

    def active_screen(self, f):
        # resolves when the trend improves (pstep moves past the one recorded at the alert);
        # an info plateau may turn "converged" where the LR has decayed
        a = self.alert
        rows = f.a("pstep") > a.evidence.get("improved_at", -1)
        if a.severity == "info" and not a.evidence.get("converged"):
            with np.errstate(invalid="ignore"):
                rows = rows | (f.a("lrok") & ~(f.a("lr") > self.decayed * f.a("peak")))
        return f.a("lok") & rows

    def step(self, f, i: int) -> None:
        if not f.lok[i]:
            return
        step = f.step[i]
        if self.alert is None and step - f.pstep[i] < self.patience:
            return
        if self.alert is not None:
            if f.pstep[i] > self.alert.evidence.get("improved_at", -1):
                self.close_episode(step, f"loss improving again ({fmt(f.trend[i])})")
                return
            a = self.alert
            lr, peak = f.lr[i], f.peak[i]
            if a.severity == "info" and not a.evidence.get("converged") and f.lrok[i] and \
                    peak > 0.0 and lr <= self.decayed * peak:
                # the schedule has since decayed: the same plateau now means "converged"
                self.update_episode(step, message=f"converged: loss flat at {fmt(f.trend[i])} at the "
                                    f"end of the LR decay (LR {fmt(lr)} = {fmt(lr / peak)}x its peak)",
                                    evidence={**a.evidence, "converged": True, "lr": lr},
                                    action=Action("none", {}, "The LR has decayed and the loss has "
                                                  "flattened: the run has converged. Nothing to do."))
            return
        if f.nl[i] < self.min_records:
            return
        since = step - f.pstep[i]
        need = self.patience_frac * (step - f.l0_step[i])
        if since < (need if need > self.patience else self.patience) or \
                f.nl[i] - f.pnl[i] < self.patience_records:
            return
        trend = f.trend[i]
        if trend == 0.0 and f.l0[i] == 0.0:
            return  # a loss of exactly 0 from the start: nothing to learn, or no target (dead's verdict)
        level = f.slow[i]
        noise = f.sd[i] / abs(level) if level != 0.0 else 0.0
        zigzag = f.alt[i]
        lr = f.lr[i] if f.lrok[i] else None
        peak = f.peak[i]
        ev: dict[str, Any] = {"trend": trend, "since": since, "improved_at": f.pstep[i],
                              "noise": noise, "zigzag": zigzag, "first_loss": f.l0[i],
                              "converged": False}
        if lr is not None:
            ev.update(lr=lr, peak_lr=peak)
        base = f"loss plateaued at {fmt(trend)}: no 1% gain in {since} steps"
        if lr is not None and peak > 0.0 and lr <= self.decayed * peak:
            ev["converged"] = True
            self.open_episode(step, "info", f"converged: {base} at the end of the LR decay "
                              f"(LR {fmt(lr)} = {fmt(lr / peak)}x its peak)", ev,
                              Action("none", {}, "The LR has decayed and the loss has flattened: the run "
                                     "has converged. Nothing to do."))
            return
        fl = f.l0[i]
        stuck = fl == fl and stuck_at_start(trend, fl, self.stuck)
        if stuck and lost_after_blowup(trend, fl, f.worst[i], f.sd[i], self.blowup):
            return  # not a plateau: a lost run (the divergence detector reports it)
        gn_fell = f.ng[i] >= self.min_records and f.mu[i] < f.mumax[i] + self.gn_drop_log
        climbed_back = progress.climbed_back(trend, f.rbest[i], fl, f.sd[i], self.given_back, self.climb_z)
        # the first loss is where training began, or the log starts later at an LR never lowered
        # since (a too-small LR held, or a converged run: either way not a schedule's tail)
        known_start = progress.logged_from_start(f.l0_step[i], step, f.nl[i], self.from_start) or \
            (lr is not None and lr >= peak)
        # a first loss of 0 (or below) has no progress to make: never a too-small LR
        barely_moved = stuck and fl > 0 and stuck_at_start(trend, fl, self.barely) and known_start
        if barely_moved and noise < self.noisy and not gn_fell and not trend > fl and not climbed_back:
            if lr_ramping(f, i):
                return  # the schedule is still raising the LR (warm-up, one-cycle): judge it after
            self.open_episode(step, "warning", f"{base}, barely below the first loss "
                              f"({fmt(fl)}): the LR is too small to make progress", ev,
                              Action("scale_lr", {"factor": self.up},
                                     f"The loss has hardly moved from where it started and is flat. "
                                     f"Raise the LR x{fmt(self.up)} (or run an LR range test)."))
            return
        if noise >= self.noisy or zigzag >= 0.8:
            # info, not warning: a loss at its noise floor is noisy whether the LR is too high or
            # the run simply converged (the benchmark's healthy linear-regression runs plateau
            # at +-15% per step); lowering the LR is the cheap thing to try
            self.open_episode(step, "info", f"{base} while the loss is noisy "
                              f"(+-{fmt(100 * noise)}% per step): a lower LR may let it settle", ev,
                              Action("scale_lr", {"factor": self.down},
                                     f"The loss stopped improving and bounces around its level. If "
                                     f"you need a lower loss, lower the LR x{fmt(self.down)}."))
            return
        self.open_episode(step, "info", f"{base}; a smaller LR usually unlocks the next drop", ev,
                          Action("scale_lr", {"factor": self.down},
                                 f"Progress has stalled at a steady, quiet level. Decaying the LR "
                                 f"x{fmt(self.down)} (as ReduceLROnPlateau would) usually helps."))
