"""Shared running statistics of a run, computed once per step for all detectors.

The recursive statistics (EMAs, running best, rising streaks, log-grad-norm moments, LR peak and
reversals) are computed by the *same* pure-Python loops in the one-record path and in the batch
path (the batch path runs them over the compressed finite values of a whole batch), so both paths
produce bit-identical features and therefore identical alerts. Everything that is not recursive
(finite masks, carrying a statistic over rows where the signal is missing, shifting "after"
values into "before" values) is done with numpy in the batch path.

Columns of :class:`Features` (one entry per row = per accepted record):

raw: ``step``, ``rec`` (record ordinal, 1-based over the run), ``loss``, ``gn``, ``lr``, ``val``
(NaN where not logged), ``has_loss``, ``has_gn``, ``has_lr``, ``has_val``, ``lok``/``gok``/
``lrok``/``vok`` (logged and finite; ``gok`` also needs grad-norm >= 0).

loss (state *after* the row; carried unchanged over rows without a finite loss):
``nl`` count of finite losses; ``l0`` the first finite loss; ``worst`` the highest ``fast``
so far; ``lprev`` last finite loss; ``lstep`` its step; ``fast`` EMA
(alpha_fast); ``best`` running minimum of ``slow`` (the noise-robust level, so a lucky
low batch does not set the bar) and ``best_step``; ``up_n`` consecutive rises
of the raw loss ending here and ``up_base`` the loss just before that streak began; ``slow``
winsorised EMA (alpha_slow) and ``sd`` its EMA mean absolute deviation (the loss level and noise a
spike is measured against); ``trend`` very slow EMA (alpha_trend, winsorised with the same cap), ``pbest`` its best value that
improved by at least ``plateau_eps`` (relative) and ``pstep`` the step of that improvement;
``alt`` EMA of "the loss changed direction" (1 = zig-zag every step) and ``amp`` EMA of the
absolute step-to-step change.

grad-norm (after, carried): ``ng`` count, ``glast`` last finite value, ``mu``/``var`` EMA mean and
variance of log(grad-norm) (alpha_g, winsorised so one explosion does not move the baseline),
``mumax`` the largest ``mu`` so far.

LR (after, carried): ``nlr`` count, ``lrlast`` last finite LR, ``peak`` max LR so far, ``rev``
number of direction reversals of the LR (warm-up then decay = 1; cyclic schedules keep adding),
``lrdir`` last non-zero direction (+1/-1/0).

"before" columns, the state before this row was folded in: ``b_lprev``, ``b_slow``, ``b_sd``,
``b_mu``, ``b_var``, ``b_glast``, ``b_lrlast``, ``b_peak``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

NAN = math.nan
INF = math.inf
CLIP = 1e100  # |values| beyond this are clipped for the statistics: keeps all arithmetic finite
LOG_TINY = math.log(1e-30)  # log of a zero grad-norm

DEFAULT_PARAMS: dict[str, float] = {
    # Half-life of one record: follows a jump within 1-2 records even in sparse logs (BLOOM
    # excerpts log every 10th step), while averaging out single-record noise a little.
    "alpha_fast": 0.5,
    # ~10-record memory: the "recent level" a spike is measured against (OLMo uses 128 steps,
    # Lightning 10; short memory matters because the level falls fast early in training).
    "alpha_slow": 0.1,
    # Winsorisation of the level/noise update: a single huge value moves the level by at most
    # alpha*(win_k*sd + win_r*|level|), so a spike does not mask the next one.
    "win_k": 4.0,
    "win_r": 0.1,
    # ~50-record memory: the trend a plateau is judged on (smooths minibatch noise).
    "alpha_trend": 0.02,
    # A plateau's best must improve by 1% (relative) to count as progress
    # (ReduceLROnPlateau's 1e-4 is below the noise of a minibatch loss).
    "plateau_eps": 0.01,
    # ~20-record memory for the zig-zag statistics.
    "alpha_osc": 0.05,
    # ZClip uses alpha 0.97 for its *keep* weight, i.e. 0.03; 0.05 adapts a little faster.
    "alpha_g": 0.05,
}

LOSS_COLS = ("nl", "l0", "worst", "lprev", "lstep", "fast", "best", "best_step", "up_n", "up_base", "slow", "sd",
             "trend", "pbest", "pstep", "alt", "amp", "dlast")
GN_COLS = ("ng", "glast", "mu", "var", "mumax")
LR_COLS = ("nlr", "lrlast", "peak", "rev", "lrdir")
BEFORE = {"b_lprev": "lprev", "b_slow": "slow", "b_sd": "sd", "b_mu": "mu", "b_var": "var",
          "b_glast": "glast", "b_lrlast": "lrlast", "b_peak": "peak"}
_BEFORE_OF = {a: b for b, a in BEFORE.items()}


def initial_state() -> dict[str, Any]:
    st: dict[str, Any] = {c: NAN for c in LOSS_COLS + GN_COLS + LR_COLS}
    st.update(nl=0, lstep=-1, best=INF, best_step=-1, up_n=0, pbest=INF, pstep=-1, alt=0.0,
              amp=0.0, dlast=0.0, ng=0, nlr=0, peak=-INF, rev=0, lrdir=0, rec=0)
    return st


def _loss_loop(st: dict[str, Any], p: dict[str, float], xs: list[float], steps: list[int]):
    """Fold finite losses ``xs`` (at ``steps``) into ``st``; return the after-state per value."""
    af, as_, at, ao = p["alpha_fast"], p["alpha_slow"], p["alpha_trend"], p["alpha_osc"]
    wk, wr, peps = p["win_k"], p["win_r"], p["plateau_eps"]
    nl, l0, lprev, fast, best, best_step = st["nl"], st["l0"], st["lprev"], st["fast"], st["best"], st["best_step"]
    worst = st["worst"]
    up_n, up_base, slow, sd, trend = st["up_n"], st["up_base"], st["slow"], st["sd"], st["trend"]
    pbest, pstep, alt, amp, dlast = st["pbest"], st["pstep"], st["alt"], st["amp"], st["dlast"]
    k = len(xs)
    o_l0, o_worst = [0.0] * k, [0.0] * k
    o_nl, o_fast, o_best, o_bstep, o_upn, o_upb = [0] * k, [0.0] * k, [0.0] * k, [0] * k, [0] * k, [0.0] * k
    o_slow, o_sd, o_trend, o_pbest, o_pstep = [0.0] * k, [0.0] * k, [0.0] * k, [0.0] * k, [0] * k
    o_alt, o_amp, o_dlast = [0.0] * k, [0.0] * k, [0.0] * k
    for j in range(k):
        x = xs[j]
        s = steps[j]
        if x > CLIP:
            x = CLIP
        elif x < -CLIP:
            x = -CLIP
        nl += 1
        if nl == 1:
            fast = slow = trend = pbest = l0 = worst = x
            sd = 0.0
            best = x
            best_step = pstep = s
            up_n = 0
            up_base = x
        else:
            fast += af * (x - fast)
            if fast > worst:
                worst = fast
            dl = x - lprev
            if dl > 0.0:
                if up_n == 0:
                    up_base = lprev
                up_n += 1
            else:
                up_n = 0
            d = x - slow
            cap = wk * sd + wr * abs(slow)
            if d > cap:
                d = cap
            slow += as_ * d
            sd += as_ * (abs(d) - sd)
            if slow < best:
                best = slow
                best_step = s
            dt = x - trend
            if dt > cap:  # winsorised like the level: one spike must not drag the trend for ~50 records
                dt = cap
            trend += at * dt
            if trend < pbest - peps * abs(pbest):
                pbest = trend
                pstep = s
            if dl != 0.0:
                flip = 1.0 if (dl > 0.0) != (dlast > 0.0) and dlast != 0.0 else 0.0
                alt += ao * (flip - alt)
                dlast = dl
            amp += ao * (abs(dl) - amp)
        lprev = x
        o_nl[j] = nl
        o_l0[j] = l0
        o_worst[j] = worst
        o_fast[j] = fast
        o_best[j] = best
        o_bstep[j] = best_step
        o_upn[j] = up_n
        o_upb[j] = up_base
        o_slow[j] = slow
        o_sd[j] = sd
        o_trend[j] = trend
        o_pbest[j] = pbest
        o_pstep[j] = pstep
        o_alt[j] = alt
        o_amp[j] = amp
        o_dlast[j] = dlast
    if k:
        st.update(nl=nl, l0=l0, worst=worst, lprev=lprev, lstep=steps[-1], fast=fast, best=best, best_step=best_step,
                  up_n=up_n, up_base=up_base, slow=slow, sd=sd, trend=trend, pbest=pbest,
                  pstep=pstep, alt=alt, amp=amp, dlast=dlast)
    xs_c = [min(max(x, -CLIP), CLIP) for x in xs]
    return {"nl": o_nl, "l0": o_l0, "worst": o_worst, "lprev": xs_c, "lstep": list(steps), "fast": o_fast, "best": o_best,
            "best_step": o_bstep, "up_n": o_upn, "up_base": o_upb, "slow": o_slow, "sd": o_sd,
            "trend": o_trend, "pbest": o_pbest, "pstep": o_pstep, "alt": o_alt, "amp": o_amp,
            "dlast": o_dlast}


def _gn_loop(st: dict[str, Any], p: dict[str, float], gs: list[float]):
    """Fold finite, non-negative grad-norms into ``st``."""
    ag = p["alpha_g"]
    ng, mu, var, mumax = st["ng"], st["mu"], st["var"], st["mumax"]
    k = len(gs)
    o_ng, o_mu, o_var, o_mx = [0] * k, [0.0] * k, [0.0] * k, [0.0] * k
    log = math.log
    for j in range(k):
        g = gs[j]
        lg = log(g) if g > 1e-30 else LOG_TINY
        if lg > 230.0:  # log(CLIP)
            lg = 230.0
        ng += 1
        if ng == 1:
            mu = mumax = lg
            var = 0.0
        else:
            d = lg - mu
            # winsorise in log space at 3 sd (at least a factor 2) so one explosion does not
            # become the new normal
            cap = 3.0 * math.sqrt(var) + 0.6931471805599453
            if d > cap:
                d = cap
            mu += ag * d
            var = (1.0 - ag) * (var + ag * d * d)
            if mu > mumax:
                mumax = mu
        o_ng[j] = ng
        o_mx[j] = mumax
        o_mu[j] = mu
        o_var[j] = var
    if k:
        st.update(ng=ng, mu=mu, var=var, mumax=mumax, glast=min(gs[-1], CLIP))
    return {"ng": o_ng, "glast": [min(g, CLIP) for g in gs], "mu": o_mu, "var": o_var, "mumax": o_mx}


def _lr_loop(st: dict[str, Any], lrs: list[float]):
    nlr, last, peak, rev, lrdir = st["nlr"], st["lrlast"], st["peak"], st["rev"], st["lrdir"]
    k = len(lrs)
    o_n, o_peak, o_rev, o_dir = [0] * k, [0.0] * k, [0] * k, [0] * k
    for j in range(k):
        x = lrs[j]
        nlr += 1
        if x > peak:
            peak = x
        if nlr > 1 and x != last:
            d = 1 if x > last else -1
            if lrdir != 0 and d != lrdir:
                rev += 1
            lrdir = d
        last = x
        o_n[j] = nlr
        o_peak[j] = peak
        o_rev[j] = rev
        o_dir[j] = lrdir
    if k:
        st.update(nlr=nlr, lrlast=last, peak=peak, rev=rev, lrdir=lrdir)
    return {"nlr": o_n, "lrlast": list(lrs), "peak": o_peak, "rev": o_rev, "lrdir": o_dir}


class Features:
    """Feature columns of one chunk of rows. Detectors read ``f.<column>[i]`` (Python values)
    in ``step`` and ``f.a("<column>")`` (numpy arrays) in ``screen``."""

    def __init__(self, n: int, lists: dict[str, list] | None = None,
                 arrays: dict[str, np.ndarray] | None = None) -> None:
        self.n = n
        self._arrays = arrays or {}
        if lists:
            self.__dict__.update(lists)

    def __getattr__(self, name: str) -> list:
        arrays = self.__dict__.get("_arrays")
        if arrays is not None and name in arrays:
            lst = arrays[name].tolist()
            self.__dict__[name] = lst
            return lst
        raise AttributeError(name)

    def a(self, name: str) -> np.ndarray:
        arr = self._arrays.get(name)
        if arr is None:
            arr = np.asarray(getattr(self, name))
            self._arrays[name] = arr
        return arr


def _finite(x: float | None) -> bool:
    return x is not None and x - x == 0.0


class FeatureTracker:
    """Owns the running statistics of one run; turns records into feature rows."""

    def __init__(self, params: dict[str, float] | None = None, state: dict[str, Any] | None = None) -> None:
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.state = state if state is not None else initial_state()

    # -- one record: pure Python ---------------------------------------------------------------
    def advance_one(self, step: int, loss: float | None, gn: float | None, lr: float | None,
                    val: float | None) -> Features:
        st = self.state
        st["rec"] += 1
        lok = _finite(loss)
        gok = _finite(gn) and gn >= 0.0
        lrok = _finite(lr)
        cols: dict[str, list] = {
            "step": [step], "rec": [st["rec"]],
            "loss": [NAN if loss is None else float(loss)], "gn": [NAN if gn is None else float(gn)],
            "lr": [NAN if lr is None else float(lr)], "val": [NAN if val is None else float(val)],
            "has_loss": [loss is not None], "has_gn": [gn is not None], "has_lr": [lr is not None],
            "has_val": [val is not None], "lok": [lok], "gok": [gok], "lrok": [lrok],
            "vok": [_finite(val)],
        }
        for b, a in BEFORE.items():
            cols[b] = [st[a]]
        out = _loss_loop(st, self.params, [float(loss)], [step]) if lok else None
        for c in LOSS_COLS:
            cols[c] = out[c] if out else [st[c]]
        out = _gn_loop(st, self.params, [float(gn)]) if gok else None
        for c in GN_COLS:
            cols[c] = out[c] if out else [st[c]]
        out = _lr_loop(st, [float(lr)]) if lrok else None
        for c in LR_COLS:
            cols[c] = out[c] if out else [st[c]]
        return Features(1, lists=cols)

    # -- a batch: numpy around the same loops ----------------------------------------------------
    def advance_batch(self, b: Any) -> Features:
        st = self.state
        n = len(b)
        steps = b.step
        arrays: dict[str, np.ndarray] = {
            "step": steps, "rec": np.arange(st["rec"] + 1, st["rec"] + 1 + n, dtype=np.int64),
            "loss": b.loss, "gn": b.grad_norm, "lr": b.lr, "val": b.val_loss,
            "has_loss": b.has_loss, "has_gn": b.has_grad_norm, "has_lr": b.has_lr,
            "has_val": b.has_val_loss,
        }
        st["rec"] += n
        with np.errstate(all="ignore"):
            lok = np.isfinite(b.loss)
            gok = np.isfinite(b.grad_norm) & (b.grad_norm >= 0.0)
            lrok = np.isfinite(b.lr)
            arrays.update(lok=lok, gok=gok, lrok=lrok, vok=np.isfinite(b.val_loss))
        start = dict(st)  # the loops mutate st; "before" values come from here
        for mask, cols, run in (
            (lok, LOSS_COLS, lambda: _loss_loop(st, self.params, b.loss[lok].tolist(), steps[lok].tolist())),
            (gok, GN_COLS, lambda: _gn_loop(st, self.params, b.grad_norm[gok].tolist())),
            (lrok, LR_COLS, lambda: _lr_loop(st, b.lr[lrok].tolist())),
        ):
            out = run()
            incl = np.cumsum(mask)  # how many values were folded in up to and including each row
            excl = incl - mask
            for c in cols:
                # ext[0] = the state before this batch, ext[j] = after the j-th folded value
                ext = np.array([start[c]] + out[c])
                arrays[c] = ext[incl]
                if c in _BEFORE_OF:
                    arrays[_BEFORE_OF[c]] = ext[excl]
        return Features(n, arrays=arrays)

    def to_state(self) -> dict[str, Any]:
        return {"params": self.params, "state": dict(self.state)}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "FeatureTracker":
        return cls(d["params"], dict(d["state"]))
