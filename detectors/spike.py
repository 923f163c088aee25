"""Loss spike: a sudden jump far above the recent level."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Detector, fmt
from .progress import RAW_SHARE, _pratio
from .types import Action

#: The spike rule's defaults, one definition for every detector that applies the rule: the
#: spike detector (``z``, ``rel``, ``sudden``, ``min_records``) and the divergence detector,
#: which counts spikes for its ``lr_jump`` and ``spike_cluster`` rules (``spike_z``,
#: ``spike_rel``, ``spike_min``). Why these values: see :class:`SpikeDetector`.
SPIKE_Z = 6.0  # noise units (mean absolute deviations of the level) above the level
SPIKE_REL = 0.2  # and at least this share of the level above it
SPIKE_SUDDEN = 0.5  # share of the excess that arrived in this one step
SPIKE_MIN_RECORDS = 5  # earlier losses needed before the noise is an estimate
SPIKE_LAG_Z = 1.0  # trend-free noise units by which the last two losses lie below the level: a lag


def poisson_tail(k: int, lam: float) -> float:
    """P(N >= k) for N ~ Poisson(lam): how often ``k`` or more spikes fall in one window by
    chance when the run's spikes come at ``lam`` per window."""
    if k <= 0:
        return 1.0
    term = math.exp(-lam)
    below = term
    for i in range(1, k):
        term *= lam / i
        below += term
    return max(0.0, 1.0 - below)


def clip_from_history(mu: float, var: float) -> float:
    """A clipping threshold from the run's own log-grad-norm statistics.

    exp(mu + 2.5 sd): ZClip's z = 2.5 on the grad-norm's own EMA statistics, and never below 1.5x
    the typical norm (a constant norm has sd 0: clipping at the norm itself would clip every step).
    Rounded to 2 significant digits, for people.
    """
    sd = math.sqrt(var) if var > 0.0 else 0.0
    v = mu + 2.5 * sd
    floor = mu + 0.4054651081081644  # log(1.5)
    if v < floor:
        v = floor
    if v > 230.0:
        v = 230.0
    x = math.exp(v)
    if x <= 0.0:
        return x
    return float(f"{x:.2g}")


def is_spike(x: float, level: float, noise: float, prev: float, z: float, rel: float,
             sudden: float) -> bool:
    """The spike rule (see :class:`SpikeDetector`) on one value; shared with the divergence
    detector, which counts spikes."""
    excess = x - level
    a = z * noise
    b = rel * abs(level)
    if not excess > (a if a > b else b):
        return False
    return x - prev >= sudden * excess


def spike_screen(f, z: float, rel: float, min_records: int):
    """Conservative vectorised superset of the rows where :func:`is_spike` can hold."""
    with np.errstate(all="ignore"):
        level = f.a("b_slow")
        thr = np.maximum(z * f.a("b_sd"), rel * np.abs(level))
        return f.a("lok") & (f.a("nl") > min_records) & ~((f.a("loss") - level) <= thr)


def recent_reference(level: float, noise: float, prev: float, prev2: float, trend_noise: float,
                     lag_z: float = SPIKE_LAG_Z) -> tuple[float, float]:
    """The spike detector's level and noise: the EMA level, or the higher of the last two
    losses (``prev``, ``prev2``) when that lies ``lag_z`` trend-free noise units below it; the
    smaller of the EMA noise and the trend-free noise (``features.nsd``, the loss's second
    differences).

    Why: the EMA level and its noise have a memory in records. During a descent the level lags
    above the loss and its deviations count that lag as noise, the more so the more steps lie
    between two records; a jump then hides under both (a PINN log thinned to every 10th epoch:
    losses at 0.19-0.22 for ten records, a level of 0.43 with a noise of 0.62, and a jump to
    0.82 was 0.6 noise units up; against the last two losses and the second-difference noise,
    0.07, it is 8). The noise keeps that memory after the level has caught up: the deviations
    of a descent decay over ~``1/alpha_slow`` records, and a log thinned to every 5th epoch had
    a loss at 1.1-1.7 with a level of 1.9 (no lag) and an EMA noise of 1.4 from its descent
    from 124, while its second differences said 0.3: its surge to 10.8 was 5.8 noise units up.
    Of independent noise both estimate the same scale (``features.SECOND_DIFF_SCALE``); a trend
    or a level's lag inflates the first, a loss that alternates from record to record the
    second, so the smaller is the noise. On a flat run the level is the lower reference about
    as often as not: the rule is the same rule there."""
    held = prev if prev > prev2 or prev2 != prev2 else prev2
    if held < level - lag_z * trend_noise:
        level = held
    if trend_noise < noise:
        noise = trend_noise
    return level, noise


def recent_screen(f, z: float, rel: float, min_records: int, lag_z: float = SPIKE_LAG_Z):
    """Conservative vectorised superset of the rows where :func:`is_spike` can hold against
    :func:`recent_reference`."""
    with np.errstate(all="ignore"):
        level = f.a("b_slow")
        held = np.fmax(f.a("b_lprev"), f.a("b_lp2"))
        lag = held < level - lag_z * f.a("b_nsd")
        level = np.where(lag, held, level)
        noise = np.fmin(f.a("b_sd"), f.a("b_nsd"))
        thr = np.maximum(z * noise, rel * np.abs(level))
        return f.a("lok") & (f.a("nl") > min_records) & ~((f.a("loss") - level) <= thr)


#: spikes remembered for the rate (bounded state; a window with more is a burst either way)
RECENT_CAP = 32


class SpikeDetector(Detector):
    """A one-step jump of the loss far above its recent level: a note, counted in a spike rate.

    Rule: ``loss - level > max(z * noise, rel * |level|)`` where ``level`` and ``noise`` are the
    winsorised EMA level and mean absolute deviation *before* this step, and most of the excess
    arrived in this one step (``loss - previous >= sudden * excess``; a slow climb is a
    divergence, not a spike). The noise is the smaller of that deviation and the noise about
    the loss's own trend (``features.nsd``, from second differences), and when the last two
    losses both lie below the level by more than the latter, the level lags a descent: the
    higher of the two is the level (:func:`recent_reference`), so a sparse log's spike is not
    hidden under the lag of a level and a noise whose memory is in records. The divergence rules count spikes against the EMA
    level and noise alone. With ``min_records`` earlier losses or fewer the EMA noise is no
    estimate yet (it starts at 0 and has seen too few deviations), so a spike then needs either

    * the loss at ``1 + early_rel`` x the level (Lightning Fabric's SpikeDetection: 2x its
      running mean): a log excerpt that begins three records before a 2.8 -> 7.3 jump shows it;
    * or, from two earlier losses on, the same rule with the *range* of the earlier losses as the
      noise: ``excess > max(z * range, rel * |level|)``. The range of a few values is the noise
      scale they show (about 1.1-2 sigma for 2-5 values, above the mean absolute deviation the
      EMA estimates), and the ``rel`` floor stays: two earlier losses can agree by chance, but a
      jump must still be a fifth of the level. A 104B model's excerpt, 2.665 and 2.667 then 4.37
      (+64 %, 950x their range), is a spike on its third record, not only once 2x is reached.

    Re-arms when the loss is back within ``max(3 * noise, rel/2 * |level|)`` of the level.

    Severity: a transient spike is **info**, a note: one-step data spikes are routine in healthy
    runs (the GPT-2 speedrun logs have up to ~140 each) and need nothing done. It becomes a
    **warning** when spikes come in a burst: ``burst`` spikes within ``window`` records, at
    ``rate_factor`` x the run's own spike rate before that window or more, once the run has at
    least a window of history before it (OLMo-core's SpikeScore
    idea: the share of spiky steps, judged against the run's own baseline), and that many in one
    window are unlikely by chance at the run's own rate: ``P(N >= spikes) < chance`` for
    ``N ~ Poisson(window x (spikes before + 1) / records before)`` (one spike of pseudocount: a
    finite history never shows a rate of zero), once two or more spikes before the window give
    a rate to test against (with fewer, the rate factor alone judges: a burst after a clean
    history is news). A long healthy run with a spike every ~140
    records has four in one window about once in 80 windows, which the rate factor alone called
    a burst. Only spikes that
    undo ``rel`` of the progress made (first loss - level) count toward it, and a burst is one
    warning per ``window``. A spike that does
    not come back is a lost run: the divergence detector owns that verdict (and the LR cut).

    Why these defaults: OLMo-core skips a step at |z| > 6 against 128 steps; the mean absolute
    deviation is ~0.8 sigma, so z = 6 here is ~5 sigma. ``rel`` = 0.2: the GPT-2 speedrun's
    data spikes are +35-40% (3.5 -> 4.8), Lightning's SpikeDetection uses +100%; 20% keeps
    ordinary minibatch noise (a few %) far below the bar. ``window`` = 128 records (OLMo-core's
    window); ``burst`` = 4: the speedrun logs' data spikes come in pairs (918 and 946).
    ``chance`` = 1e-3: the test is made at each counted spike, so a run with a hundred spikes
    has about a 1 in 10 chance of one false burst warning; the second half of the 1.5B GPT-2
    speedrun (72 spikes in 10,174 records, 0.9 per window) needs six in a window, and a run
    with two spikes in its first 900 records (0.4 per window) still warns at four.

    Action: ``clip_grad_norm`` at a max_norm from the run's own grad-norm history
    (:func:`clip_from_history`), or ``skip_batch`` without three finite grad-norms to size a
    clip. Never an LR change: a one-step spike that recovers is a data event, not an LR problem.

    Parameters
    ----------
    z : float, default 6.0
    rel : float, default 0.2
    sudden : float, default 0.5
    min_records : int, default 5
    early_rel : float, default 1.0
    burst, window, rate_factor : int, int, float, default 4, 128, 4.0
    chance : float, default 1e-3
        The most a burst may be expected by chance at the run's own spike rate (Poisson).
    lag_z : float, default 1.0
        How far (in trend-free noise units, ``features.nsd``) the higher of the last two losses
        must lie below the EMA level for the spike to be measured against them instead
        (:func:`recent_reference`: a sparse log's level lags a descent). Set on seeds 0-1 and the
        tune part: at 1, spike recall 32/42 with 73 notes on runs without an injected spike; at
        2, 30/42 with 63 notes and a thinned PINN log's spike unseen; with no bar, 35/42 with 82
        (measured when the trend-free noise served only under a lag; since it serves always,
        34/42 with 78 notes at 1).

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> losses = [3.5, 3.52, 3.49, 3.51, 3.5, 3.48, 4.9, 3.5]
    >>> out = [a for s, x in enumerate(losses) for a in eng.update(Record(s, x, grad_norm=1.0))]
    >>> [(a.kind, a.severity, a.step, a.resolved_step, a.action.type) for a in out]
    [('spike', 'info', 6, None, 'clip_grad_norm'), ('spike', 'info', 6, 7, 'clip_grad_norm')]

    References
    ----------
    OLMo-core skip-step (z > 6); Lightning Fabric SpikeDetection; ZClip (Kumar et al. 2025).
    """

    name = "spike"
    kind = "spike"
    static_screen = True

    def __init__(self, z: float = SPIKE_Z, rel: float = SPIKE_REL, sudden: float = SPIKE_SUDDEN,
                 min_records: int = SPIKE_MIN_RECORDS, early_rel: float = 1.0, burst: int = 4, window: int = 128,
                 rate_factor: float = 4.0, lag_z: float = SPIKE_LAG_Z, chance: float = 1e-3) -> None:
        super().__init__(z=z, rel=rel, sudden=sudden, min_records=min_records,
                         early_rel=early_rel, burst=burst, window=window, rate_factor=rate_factor,
                         lag_z=lag_z, chance=chance)
        self.recent: list[int] = []  # record ordinals of the last RECENT_CAP spikes
        self.n_spikes = 0  # spikes so far in the run
        self.warned = -(10**9)  # record ordinal of the last burst warning
        # the lowest and highest of the run's first losses (up to min_records of them): the
        # noise scale of the early rule. Every row with nl <= min_records is stepped (both screens)
        self.early_lo = math.inf
        self.early_hi = -math.inf

    def get_state(self) -> dict[str, Any]:
        return {"recent": self.recent, "n_spikes": self.n_spikes, "warned": self.warned,
                "early_lo": self.early_lo, "early_hi": self.early_hi}

    def set_state(self, d: dict[str, Any]) -> None:
        self.recent, self.n_spikes, self.warned = list(d["recent"]), d["n_spikes"], d["warned"]
        self.early_lo = d.get("early_lo", math.inf)  # absent in states saved before it existed
        self.early_hi = d.get("early_hi", -math.inf)

    def rate(self, records: int) -> float:
        """The run's spike rate after ``records`` records: the share of the last ``window``
        records that were counted spikes (at most RECENT_CAP of them are remembered: a window
        with that many is a burst anyway)."""
        since = records - self.window
        return sum(1 for r in self.recent if r > since) / self.window

    def screen(self, f):
        early = f.a("lok") & (f.a("nl") <= self.min_records)  # the early rule's range is kept
        return recent_screen(f, self.z, self.rel, self.min_records, self.lag_z) | early

    def active_screen(self, f):
        with np.errstate(all="ignore"):
            level = f.a("b_slow")
            back = np.maximum(3.0 * f.a("b_sd"), 0.5 * self.rel * np.abs(level))
            return f.a("lok") & (~((f.a("loss") - level) > back) | (f.a("nl") <= self.min_records))

    def step(self, f, i: int) -> None:
        if not f.lok[i]:
            return
        x = f.loss[i]
        nl = f.nl[i]
        lo, hi = self.early_lo, self.early_hi  # the earlier losses' range, before this one
        if nl <= self.min_records:
            if x < lo:
                self.early_lo = x
            if x > hi:
                self.early_hi = x
        level = f.b_slow[i]
        noise = f.b_sd[i]
        excess = x - level
        step = f.step[i]
        if self.alert is not None:
            a = 3.0 * noise
            b = 0.5 * self.rel * abs(level)
            if excess <= (a if a > b else b):
                self.close_episode(step, f"loss back to {fmt(x)} (level {fmt(level)})")
            return
        if nl <= 1:
            return
        if nl <= self.min_records:  # no EMA noise yet: 2x the level, or z x the earlier range
            noise = hi - lo if nl > 2 else 0.0  # what the loss was compared with
            if not is_spike(x, level, 0.0, f.b_lprev[i], 0.0, self.early_rel, self.sudden) and \
                    not (nl > 2 and is_spike(x, level, hi - lo, f.b_lprev[i], self.z, self.rel, self.sudden)):
                return
        else:
            level, noise = recent_reference(level, noise, f.b_lprev[i], f.b_lp2[i], f.b_nsd[i], self.lag_z)
            excess = x - level
            if not is_spike(x, level, noise, f.b_lprev[i], self.z, self.rel, self.sudden):
                return
        ev: dict[str, Any] = {"loss": x, "level": level, "noise": noise, "previous": f.b_lprev[i],
                              "excess": excess}
        if f.ng[i] >= 3 and f.mu[i] == f.mu[i]:
            max_norm = clip_from_history(f.b_mu[i] if f.gok[i] else f.mu[i],
                                         f.b_var[i] if f.gok[i] else f.var[i])
            if f.gok[i]:
                ev["grad_norm"] = f.gn[i]
            act = Action("clip_grad_norm", {"max_norm": max_norm},
                         f"One-step loss spike ({fmt(level)} -> {fmt(x)}). Clip gradients at "
                         f"max_norm={fmt(max_norm)} (your grad-norm's own recent range) so one bad "
                         "batch cannot move the weights far. No LR change needed if it recovers.")
        else:
            logged = f.ng[i] > 0 or f.has_gn[i]  # a grad-norm column whose values are all NaN so far
            why = "Too few finite grad-norms are logged yet" if logged else "No grad-norm is logged"
            act = Action("skip_batch", {},
                         f"One-step loss spike ({fmt(level)} -> {fmt(x)}). {why} to "
                         "size a clip; skip this batch if the spike repeats on the same data. No LR "
                         "change needed if it recovers.")
        rec = f.rec[i]
        # a spike counts toward a burst when it undoes ``rel`` of the progress made (the
        # divergence rules' progress scale): a memorising model's 0.017 -> 0.058 is noise
        counts = _pratio(x, level, f.l0[i], RAW_SHARE) - 1.0 >= self.rel
        before = rec - self.window  # records before the window, and the spikes among them
        in_window = sum(1 for r in self.recent if r > before) + 1  # this one included
        earlier = self.n_spikes - in_window + 1  # counted spikes before the window
        base = earlier / before if before > 0 else 0.0
        if counts:
            self.recent = (self.recent + [rec])[-RECENT_CAP:]
            self.n_spikes += 1
        else:
            in_window -= 1
        # a rate needs a baseline: no burst is judged before the run has a window of history;
        # and a burst is one warning (the next spikes of the same window are notes)
        burst = counts and before >= self.window and in_window >= self.burst and \
            in_window / self.window >= self.rate_factor * base and rec - self.warned > self.window and \
            (earlier < 2 or poisson_tail(in_window, self.window * (earlier + 1) / before) < self.chance)
        if burst:
            self.warned = rec
        ev.update(spikes_in_window=in_window, spike_rate=in_window / self.window)
        msg = f"loss spike at step {step}: {fmt(x)} against a recent level of {fmt(level)}"
        if burst:
            usual = f"{fmt(in_window / self.window / base)}x the run's usual rate" if base > 0 else \
                f"none in the {before} records before"
            msg += f"; {in_window} spikes in the last {self.window} records ({usual})"
        self.open_episode(step, "warning" if burst else "info", msg, ev, act)
