"""Shared running statistics of a run, computed once per step for all detectors.

The float recursions (the EMAs of the loss and of log grad-norm, the plateau best) are computed
by the *same* pure-Python loops (``_loss_core``, ``_gn_core``) in the one-record path and in the
batch path (which runs them over the compressed finite values of a whole batch), so both paths
produce bit-identical floats and therefore identical alerts. Where the package was built with a
C compiler, the batch path runs their compiled twin (``_recursions.c``, through ``_loss_fold`` and
``_gn_fold``): the same operations in the same order on the same doubles, so the same floats to
the bit (tests/test_recursions.py), at a small fraction of the cost of a Python loop per record.
Everything else is exact selection or comparison logic, which the batch path does with numpy
(running best/worst, rising streaks, counts, LR peak/direction/reversals, finite masks, carrying
a statistic over rows where the signal is missing, shifting "after" values into "before" values)
and the one-record path does in a few lines of Python (``_loss_one``, ``_gn_one``, ``_lr_one``); the equivalence tests check
the two agree.

The columns of a row, with their types and meanings, are listed once: in :class:`Features`.
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Annotated, Any, Sequence

import numpy as np

try:  # the two recursions compiled (optional: built with the package where a C compiler is)
    from . import _recursions
except ImportError:  # pragma: no cover - the pure-Python loops below do the same work
    _recursions = None  # type: ignore[assignment]

NAN = math.nan
INF = math.inf
CLIP = 1e100  # |values| beyond this are clipped for the statistics: keeps all arithmetic finite
TINY = 1e-30  # a grad-norm at or below this is read as zero
LOG_TINY = math.log(TINY)  # log of a zero grad-norm
LOG_CLIP = 230.0  # log(CLIP), floored: the largest log grad-norm the statistics use
LN2 = 0.6931471805599453  # the grad-norm's winsorisation cap is at least a factor 2
#: |x - 2 x' + x''| of independent noise is sqrt(6) times the noise's own mean absolute deviation
SECOND_DIFF_SCALE = 1.0 / math.sqrt(6.0)

DEFAULT_PARAMS: dict[str, float] = {
    # Half-life of one record: follows a jump within 1-2 records even in sparse logs (BLOOM
    # excerpts log every 10th step), while averaging out single-record noise a little.
    "alpha_fast": 0.5,
    # ~10-record memory: the "recent level" a spike is measured against (OLMo uses 128 steps,
    # Lightning 10; short memory matters because the level falls fast early in training). A
    # descent faster than that memory re-anchors the level instead (``_loss_core``): a PINN log
    # thinned to every 10th epoch falls 124 -> 4.2 in one record, and ten records later the
    # EMA level was still 25 with a noise of 40, blind to a 1.7 -> 10.8 surge.
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
    # The start level (``start_level``): the median of this many first losses replaces a first
    # loss below it. A per-batch loss of a fine-tune that starts near its floor draws its first
    # value anywhere in its noise: a Whisper fine-tune (bench/real, healthy) logged 0.269, then
    # 0.44-0.97, and was called lost for sitting above 0.269.
    "start_records": 5,
    # ... when that median is at least this multiple of the first loss: far enough that the
    # divergence rules would read the next losses as a run far above its best (their
    # ``level_ratio``). Closer, the first loss stays: from scratch it is the untrained loss and
    # a rise from it is the LR (a CNN at 100x its LR: 2.29 at chance, then 2.39-2.79).
    "start_low": 1.5,
    # ... if all of them lie within this factor of their median: a loss that jumps further right
    # after its first value blew up from there, it is not noise (the divergence detector's
    # ``blowup`` multiple; a minibatch draw is not half or twice its level).
    "start_rise": 2.0,
}

LOSS_COLS = ("nl", "l0", "l0_step", "l0_n", "worst", "top", "lprev", "lp2", "lstep", "fast", "best", "best_step", "rbest",
             "rbest_step", "up_n", "up_base", "slow", "sd", "nsd", "trend", "pbest", "pstep", "pnl", "alt", "amp")
GN_COLS = ("ng", "glast", "mu", "var", "mumax")
LR_COLS = ("nlr", "lrlast", "lrstep", "peak", "rev", "lrdir")
FO_COLS = ("fo", "fostep")
VAL_COLS = ("v0", "vlast", "vbest", "nv")
FO_MAX = 1e200  # one record's first-order term is clipped here: the running sum stays finite
BEFORE = {"b_lprev": "lprev", "b_lstep": "lstep", "b_lp2": "lp2", "b_top": "top", "b_slow": "slow", "b_sd": "sd", "b_nsd": "nsd",
          "b_mu": "mu", "b_var": "var", "b_glast": "glast", "b_lrlast": "lrlast", "b_lrstep": "lrstep", "b_peak": "peak"}
_BEFORE_OF = {a: b for b, a in BEFORE.items()}
ALL_COLS = LOSS_COLS + GN_COLS + LR_COLS + FO_COLS + VAL_COLS
# The one-record path reads the state for its row with these (one C call each, see advance_one)
_BEFORE_NAMES = tuple(BEFORE)
_before_values = itemgetter(*BEFORE.values())
_after_values = itemgetter(*ALL_COLS)
_loss_after = itemgetter(*LOSS_COLS)


def initial_state() -> dict[str, Any]:
    st: dict[str, Any] = {c: NAN for c in LOSS_COLS + GN_COLS + LR_COLS + VAL_COLS}
    st.update(nl=0, l0_step=-1, l0_n=0, firsts=(), lstep=-1, best=INF, best_step=-1, rbest=INF, rbest_step=-1, up_n=0, pbest=INF,
              pstep=-1, pnl=0, alt=0.0, amp=0.0, dlast=0.0, ng=0, nlr=0, lrstep=-1, peak=-INF, rev=0, lrdir=0, rec=0,
              fo=0.0, fostep=-1, vbest=INF, nv=0)
    return st


def _loss_core(st: dict[str, Any], p: dict[str, float], xs: Sequence[float], steps: Sequence[int],
               collect: bool = True):
    """The recursive loss statistics (EMAs and the plateau best), folded over finite, clipped
    losses ``xs`` at ``steps``. Shared by both paths: the only loss code with float recursions.
    Updates the EMA entries of ``st`` (not nl/lprev: the callers do) and returns the per-value
    columns of each of them (numpy arrays, keyed as ``_CORE_COLS``); with ``collect`` false (the
    one-record path, which reads ``st``) none are built and it returns None."""
    af, as_, at, ao = p["alpha_fast"], p["alpha_slow"], p["alpha_trend"], p["alpha_osc"]
    wk, wr, peps = p["win_k"], p["win_r"], p["plateau_eps"]
    sdiff = SECOND_DIFF_SCALE
    nl, lprev, lp2 = st["nl"], st["lprev"], st["lp2"]
    fast, slow, sd, nsd, trend = st["fast"], st["slow"], st["sd"], st["nsd"], st["trend"]
    if nsd != nsd:  # NaN: a state saved before it existed starts it from the level's noise
        nsd = sd
    pbest, pstep, alt, amp, dlast = st["pbest"], st["pstep"], st["alt"], st["amp"], st["dlast"]
    pnl = st["pnl"]
    # the trend must fall below this to count as progress: recomputed only when pbest moves
    pfloor = pbest - peps * (pbest if pbest >= 0.0 else -pbest)
    k = len(xs)
    if collect:
        # the statistics of each value in _CORE_COLS order, one flat list for all values (one
        # list extension per value instead of an append per statistic; a flat list of numbers
        # holds no container the garbage collector would have to visit), sliced into columns
        flat: list = []
    for x, s in zip(xs, steps):
        if nl == 0:
            fast = slow = trend = pbest = x
            pfloor = pbest - peps * (pbest if pbest >= 0.0 else -pbest)
            sd = nsd = 0.0
            pstep = s
            pnl = 1
        else:
            # (abs() written out: this loop is the hot path of both update paths)
            fast += af * (x - fast)
            cap = wk * sd + wr * (slow if slow >= 0.0 else -slow)
            held = x if x > lprev else lprev
            if slow - held > cap and held > 0.0:
                # the loss has been below the level by more than its noise band (the same band
                # that caps a rise) on this record and the one before: a descent the level has
                # not followed, not a lucky batch (one low record does not do it). Re-anchor the
                # level on the higher of the two and keep the noise's share of the level: the
                # deviations measured during the descent are the descent, not noise. (Positive
                # levels only: a share of a level near or below zero means nothing. The trend
                # is not re-anchored: its lag is what tells a fresh descent, raw_runaway.)
                nsd *= held / slow
                sd *= held / slow
                slow = held
                cap = wk * sd + wr * slow
            d = x - slow
            if d > cap:
                d = cap
            slow += as_ * d
            sd += as_ * ((d if d >= 0.0 else -d) - sd)
            dl = x - lprev
            # the noise about the loss's own local trend: a second difference, which a steady
            # descent or climb does not enter (the level's lag does enter sd), winsorised like it
            e = (dl - lprev + lp2) * sdiff if lp2 == lp2 else dl
            if e < 0.0:
                e = -e
            nsd += as_ * ((cap if e > cap else e) - nsd)
            dt = x - trend
            if dt > cap:  # winsorised like the level: one spike must not drag the trend for ~50 records
                dt = cap
            trend += at * dt
            if trend < pfloor:
                pbest = trend
                pfloor = pbest - peps * (pbest if pbest >= 0.0 else -pbest)
                pstep = s
                pnl = nl + 1
            # a direction flip: this move and the last non-zero one of opposite signs
            if dl > 0.0:
                alt += ao * ((1.0 if dlast < 0.0 else 0.0) - alt)
                dlast = dl
                amp += ao * (dl - amp)
            elif dl < 0.0:
                alt += ao * ((1.0 if dlast > 0.0 else 0.0) - alt)
                dlast = dl
                amp += ao * (-dl - amp)
            else:
                amp += ao * (0.0 - amp)
        nl += 1
        lp2 = lprev
        lprev = x
        if collect:
            flat += (fast, slow, sd, nsd, trend, pbest, alt, amp, pstep, pnl)
    if k:  # one store each: update(**kw) would build a keyword dict first, per record
        st["fast"] = fast
        st["slow"] = slow
        st["sd"] = sd
        st["nsd"] = nsd
        st["trend"] = trend
        st["pbest"] = pbest
        st["pstep"] = pstep
        st["pnl"] = pnl
        st["alt"] = alt
        st["amp"] = amp
        st["dlast"] = dlast
    if not collect:
        return None
    return {c: _column(flat[i::10], dt, k) for i, (c, dt) in enumerate(_CORE_COLS)}


#: The columns ``_loss_core`` returns, in the order of its per-value tuples, with their dtypes.
_CORE_COLS = (("fast", np.float64), ("slow", np.float64), ("sd", np.float64), ("nsd", np.float64), ("trend", np.float64),
              ("pbest", np.float64), ("alt", np.float64), ("amp", np.float64), ("pstep", np.int64),
              ("pnl", np.int64))


def _column(values: Sequence, dtype: type, k: int) -> np.ndarray:
    """``k`` Python floats (or ints) as a numpy column: the same values ``np.array`` makes, at
    about half its cost (no dtype discovery over the values)."""
    return np.fromiter(values, dtype, k)


_FOLD_STATE = ("nl", "lprev", "lp2", "fast", "slow", "sd", "nsd", "trend", "pbest", "pstep", "pnl", "alt", "amp", "dlast")
_fold_state = itemgetter(*_FOLD_STATE)


def _loss_fold(st: dict[str, Any], p: dict[str, float], xs: np.ndarray, steps: np.ndarray) -> dict[str, np.ndarray]:
    """``_loss_core(st, p, xs.tolist(), steps.tolist())`` in compiled code (``_recursions.c``: the
    same operations in the same order, so the same floats to the bit; the batch path's cost)."""
    k = len(xs)
    # nsd NaN: as _loss_core, a state saved before it existed starts it from the level's noise
    state = _fold_state(st if st["nsd"] == st["nsd"] else {**st, "nsd": st["sd"]})
    params = (p["alpha_fast"], p["alpha_slow"], p["alpha_trend"], p["alpha_osc"], p["win_k"], p["win_r"],
              p["plateau_eps"], SECOND_DIFF_SCALE)
    out_f = np.empty((8, k), dtype=np.float64)
    out_i = np.empty((2, k), dtype=np.int64)
    new = _recursions.loss_fold(params, state, np.ascontiguousarray(xs, dtype=np.float64),
                                np.ascontiguousarray(steps, dtype=np.int64), out_f, out_i)
    if k:  # the entries _loss_core updates (nl, lprev, lp2 are the callers')
        st.update(zip(_FOLD_STATE[3:], new[3:]))
    cols = {c: out_f[j] for j, (c, _) in enumerate(_CORE_COLS[:8])}
    cols["pstep"], cols["pnl"] = out_i[0], out_i[1]
    return cols


def _gn_fold(st: dict[str, Any], p: dict[str, float], gs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_gn_core(st, p, gs.tolist())`` in compiled code (see ``_loss_fold``)."""
    out = np.empty((2, len(gs)), dtype=np.float64)
    _, mu, var = _recursions.gn_fold((p["alpha_g"], TINY, LOG_TINY, LOG_CLIP, LN2), (st["ng"], st["mu"], st["var"]),
                                     np.ascontiguousarray(gs, dtype=np.float64), out)
    if len(gs):
        st["mu"] = mu
        st["var"] = var
    return out[0], out[1]


def start_level(firsts: Sequence[float], p: dict[str, float]) -> float:
    """Where the run started, from its first losses ``firsts``: the first loss, or, once
    ``start_records`` losses are in, their median when the first is a low draw of a noisy
    loss: positive, the lowest of them, ``start_low`` x below the median or more, and all of
    them within a factor ``start_rise`` of the median (a loss that shot up right after its
    first value blew up from there: the first value is where it started; a CNN at 100x its LR
    logs 2.33, 90.6, 5.3, 2.48, 2.43).

    One-sided on purpose: a first loss above the next ones is the start of a descent (training
    lowers the loss fastest at its start), the level every "back where it started" and "N x
    the first loss" test means.

    "The first loss" in every detector's rule means this start level (``features.l0``). The
    alerts quote it as "its first loss (value at step s)" while it is the first loss itself,
    and as "its start level (value, the median of its first n losses)" once the median
    replaced it (``features.l0_n``): the loss logged at the first step is then another value.

    Settings (feature parameters, ``Engine(params={"features": {...}})``; defaults in the table
    of feature settings): ``start_records``, how many first losses the median is taken over
    (a positive integer); ``start_low``, how far below that median the first loss must be to
    be replaced (the median >= ``start_low`` x the first loss); ``start_rise``, the factor of
    the median within which all of them must lie (a loss that shoots further up right after
    its first value blew up from there: the first value stays)."""
    x0 = firsts[0]
    if len(firsts) < p["start_records"] or not x0 > 0.0:
        return x0
    ordered = sorted(firsts)
    m = ordered[(len(firsts) - 1) // 2]
    rise = p["start_rise"]
    return m if ordered[0] == x0 and p["start_low"] * x0 <= m < rise * x0 and ordered[-1] < rise * m else x0


def _start_one(st: dict[str, Any], p: dict[str, float], x: float, s: int, nl: int) -> None:
    """Fold the ``nl``-th loss (0-based, at step ``s``, already in the level; one of the first
    ``start_records``) into the start level. (A state saved before ``firsts`` existed
    holds fewer of them than losses: its start stays.)

    When the start level rises above a low first draw, the statistics that the draw set alone
    start over from the start level: the level (its noise: the median absolute deviation of
    the first losses from it), the trend and its plateau best, the best level and the raw
    best. Otherwise the level, which follows a rise only within its noise band and had no
    noise yet, creeps up from the draw for tens of records, and the draw stays the best that
    every later loss is "x times worse" than."""
    firsts = st["firsts"]
    if len(firsts) != nl:
        return
    firsts = (*firsts, x)
    st["firsts"] = firsts
    l0 = start_level(firsts, p)
    if l0 == st["l0"]:
        return
    st["l0"] = l0
    st["l0_n"] = 0 if l0 == firsts[0] else len(firsts)
    dev = sorted(abs(v - l0) for v in firsts)
    held = x if x > st["lprev"] else st["lprev"]
    noise = dev[(len(dev) - 1) // 2]
    st.update(slow=l0, sd=noise, nsd=noise, trend=l0, pbest=l0, pstep=s, pnl=nl + 1,
              best=l0, best_step=s, rbest=held if held < l0 else l0, rbest_step=s)


def _loss_one(st: dict[str, Any], p: dict[str, float], x: float, s: int) -> None:
    """Fold one finite loss into ``st`` (the one-record path): core EMAs, then the statistics
    the batch path derives with numpy (same definitions, see ``_loss_batch``)."""
    x = CLIP if x > CLIP else (-CLIP if x < -CLIP else x)
    nl, lprev = st["nl"], st["lprev"]  # the core leaves both to its callers
    _loss_core(st, p, (x,), (s,), collect=False)
    if nl == 0:
        st.update(l0=x, l0_step=s, l0_n=0, best=st["slow"], best_step=s, worst=st["fast"], top=x, up_n=0,
                  up_base=x, rbest=x, rbest_step=s)
    else:
        held = x if x > lprev else lprev
        if held < st["rbest"]:
            st["rbest"] = held
            st["rbest_step"] = s
        slow = st["slow"]
        if slow < st["best"]:
            st["best"] = slow
            st["best_step"] = s
        fast = st["fast"]
        if fast > st["worst"]:
            st["worst"] = fast
        if not x <= st["top"]:  # NaN: a state saved before ``top`` existed starts it here
            st["top"] = x
        if x > lprev:
            up_n = st["up_n"]
            if up_n == 0:
                st["up_base"] = lprev
            st["up_n"] = up_n + 1
        else:
            st["up_n"] = 0
    if nl < p["start_records"]:
        _start_one(st, p, x, s, nl)
    st["nl"] = nl + 1
    st["lp2"] = lprev
    st["lprev"] = x
    st["lstep"] = s


def _ffill_index(mask: np.ndarray) -> np.ndarray:
    """For each position, the index of the last True at or before it (-1 if none)."""
    idx = np.where(mask, np.arange(len(mask)), -1)
    return np.maximum.accumulate(idx) if len(idx) else idx


def _running_extreme(v: np.ndarray, init: float, has_init: bool, lower: bool):
    """The one-record path's ``if v < best: best = v`` (or ``>``) over an array: the values and the
    positions of strict improvements. Not ``np.minimum.accumulate`` alone: on ties it may return
    the other signed zero, and the paths must agree bit for bit."""
    acc_f = np.minimum.accumulate if lower else np.maximum.accumulate
    prev = acc_f(np.concatenate(([init], v)))[:-1] if has_init else \
        np.concatenate(([np.nan], acc_f(v)[:-1]))
    improved = v < prev if lower else v > prev
    if not has_init:
        improved[0] = True
    last = _ffill_index(improved)
    vals = np.where(last >= 0, v[np.maximum(last, 0)], init)
    return vals, improved, last


def _loss_batch(st: dict[str, Any], p: dict[str, float], xs: np.ndarray, steps: np.ndarray):
    """Fold finite losses (a batch) into ``st``; per-value columns (numpy arrays)."""
    k = len(xs)
    xs = np.clip(xs, -CLIP, CLIP)
    nl0 = st["nl"]
    head = min(k, int(p["start_records"]) - nl0)
    if head > 0:
        # the first losses of a run go through the one-record path: the start level may restart
        # the statistics there (_start_one), which the running minima below do not do
        rows = []
        for x, s in zip(xs[:head].tolist(), steps[:head].tolist()):
            _loss_one(st, p, x, s)
            rows.append(_loss_after(st))
        first = {c: np.array(v) for c, v in zip(LOSS_COLS, zip(*rows))}
        if head == k:
            return first
        rest = _loss_batch(st, p, xs[head:], steps[head:])
        return {c: np.concatenate((first[c], rest[c])) for c in LOSS_COLS}
    start = dict(st)
    out = _loss_core(st, p, xs.tolist(), steps.tolist()) if _recursions is None else _loss_fold(st, p, xs, steps)
    slow, fast = out["slow"], out["fast"]
    out["nl"] = nl0 + np.arange(1, k + 1, dtype=np.int64)
    out["l0"] = np.full(k, start["l0"] if nl0 else xs[0])
    out["l0_step"] = np.full(k, start["l0_step"] if nl0 else steps[0], dtype=np.int64)
    out["l0_n"] = np.full(k, start["l0_n"] if nl0 else 0, dtype=np.int64)
    out["lprev"] = xs
    out["lstep"] = steps
    prev_x = np.concatenate(([start["lprev"]], xs[:-1]))  # NaN before the first loss
    out["lp2"] = prev_x
    # best: running minimum of slow; best_step moves on strict improvements only
    out["best"], _, last = _running_extreme(slow, start["best"], nl0 > 0, lower=True)
    out["best_step"] = np.where(last >= 0, steps[np.maximum(last, 0)], start["best_step"])
    # rbest: running minimum of max(loss, previous loss); the first loss stands for itself
    held = np.where(xs > prev_x, xs, prev_x)
    if nl0 == 0:
        held[0] = xs[0]
    out["rbest"], _, last = _running_extreme(held, start["rbest"], nl0 > 0, lower=True)
    out["rbest_step"] = np.where(last >= 0, steps[np.maximum(last, 0)], start["rbest_step"])
    # worst: running maximum of fast
    out["worst"] = _running_extreme(fast, start["worst"], nl0 > 0, lower=False)[0]
    # top: running maximum of the raw loss (a state saved before it existed starts it here)
    out["top"] = _running_extreme(xs, start["top"], nl0 > 0 and start["top"] == start["top"], lower=False)[0]
    # rising streaks of the raw loss: up_n and the loss just before the streak began (NaN
    # before the first loss: no rise)
    rise = xs > prev_x
    c = np.cumsum(rise)
    lastc = np.maximum.accumulate(np.where(~rise, c, -1))
    up_n = np.where(lastc >= 0, c - lastc, c + start["up_n"])
    begins = rise & (up_n == 1)
    base_vals = prev_x.copy()
    if nl0 == 0:  # the very first loss opens the base (as the one-record path does)
        begins[0] = True
        base_vals[0] = xs[0]
    lb = _ffill_index(begins)
    out["up_n"] = up_n
    out["up_base"] = np.where(lb >= 0, base_vals[np.maximum(lb, 0)], start["up_base"])
    st.update(nl=nl0 + k, l0=float(out["l0"][-1]), l0_step=int(out["l0_step"][-1]),
              l0_n=int(out["l0_n"][-1]), lprev=float(xs[-1]), lp2=float(prev_x[-1]), lstep=int(steps[-1]),
              best=float(out["best"][-1]), best_step=int(out["best_step"][-1]),
              rbest=float(out["rbest"][-1]), rbest_step=int(out["rbest_step"][-1]),
              worst=float(out["worst"][-1]), top=float(out["top"][-1]), up_n=int(up_n[-1]), up_base=float(out["up_base"][-1]))
    return out


def _gn_core(st: dict[str, Any], p: dict[str, float], gs: Sequence[float], collect: bool = True):
    """EMA mean/variance of log grad-norm (winsorised), over finite non-negative values. Returns
    their per-value columns (numpy arrays) or, with ``collect`` false (the one-record path, which
    reads ``st``), None."""
    ag = p["alpha_g"]
    ng, mu, var = st["ng"], st["mu"], st["var"]
    k = len(gs)
    if collect:
        flat: list[float] = []  # mu, var of each value (as in _loss_core)
    keep = 1.0 - ag
    log = math.log
    sqrt = math.sqrt
    ln2 = LN2
    for g in gs:
        lg = log(g) if g > TINY else LOG_TINY
        if lg > LOG_CLIP:
            lg = LOG_CLIP
        if ng == 0:
            mu = lg
            var = 0.0
        else:
            d = lg - mu
            # winsorise in log space at 3 sd (at least a factor 2) so one explosion does not
            # become the new normal; the cap is never below ln 2, so a smaller step needs no sqrt
            if d > ln2:
                cap = 3.0 * sqrt(var) + ln2
                if d > cap:
                    d = cap
            mu += ag * d
            var = keep * (var + ag * d * d)
        ng += 1
        if collect:
            flat += (mu, var)
    if k:
        st["mu"] = mu
        st["var"] = var
    if not collect:
        return None
    return _column(flat[0::2], np.float64, k), _column(flat[1::2], np.float64, k)


def _gn_one(st: dict[str, Any], p: dict[str, float], g: float) -> None:
    ng = st["ng"]
    _gn_core(st, p, (g,), collect=False)
    mu = st["mu"]
    if ng == 0 or mu > st["mumax"]:
        st["mumax"] = mu
    st["ng"] = ng + 1
    st["glast"] = g if g < CLIP else CLIP


def _gn_batch(st: dict[str, Any], p: dict[str, float], gs: np.ndarray):
    k = len(gs)
    ng0, mumax0 = st["ng"], st["mumax"]
    mu, var = _gn_core(st, p, gs.tolist()) if _recursions is None else _gn_fold(st, p, gs)
    mumax = _running_extreme(mu, mumax0, ng0 > 0, lower=False)[0]
    glast = np.minimum(gs, CLIP)
    st.update(ng=ng0 + k, mumax=float(mumax[-1]), glast=float(glast[-1]))
    return {"ng": ng0 + np.arange(1, k + 1, dtype=np.int64), "glast": glast, "mu": mu,
            "var": var, "mumax": mumax}


def _lr_one(st: dict[str, Any], x: float, s: int) -> None:
    if x > st["peak"]:
        st["peak"] = x
    nlr, last = st["nlr"], st["lrlast"]
    if nlr > 0 and x != last:
        d = 1 if x > last else -1
        lrdir = st["lrdir"]
        if lrdir != 0 and d != lrdir:
            st["rev"] += 1
        st["lrdir"] = d
    st["nlr"] = nlr + 1
    st["lrlast"] = x
    st["lrstep"] = s


def _lr_batch(st: dict[str, Any], lrs: np.ndarray, steps: np.ndarray):
    """LR peak, direction and reversals: no float recursion, so pure numpy."""
    k = len(lrs)
    nlr0 = st["nlr"]
    peak = _running_extreme(lrs, st["peak"], True, lower=False)[0]
    prev = np.concatenate(([st["lrlast"]], lrs[:-1]))
    d = (lrs > prev).astype(np.int64) - (lrs < prev).astype(np.int64)
    if nlr0 == 0:
        d[0] = 0
    nz = d != 0
    li = _ffill_index(nz)
    lrdir = np.where(li >= 0, d[np.maximum(li, 0)], st["lrdir"])
    prevdir = np.concatenate(([st["lrdir"]], lrdir[:-1]))
    rev = st["rev"] + np.cumsum(nz & (prevdir != 0) & (d != prevdir))
    st.update(nlr=nlr0 + k, lrlast=float(lrs[-1]), lrstep=int(steps[-1]), peak=float(peak[-1]),
              rev=int(rev[-1]), lrdir=int(lrdir[-1]))
    return {"nlr": nlr0 + np.arange(1, k + 1, dtype=np.int64), "lrlast": lrs, "lrstep": steps, "peak": peak,
            "rev": rev, "lrdir": lrdir}


def _fo_one(st: dict[str, Any], lr: float, g: float, s: int) -> None:
    fostep = st["fostep"]
    gap = s - fostep if fostep >= 0 else 1
    t = lr * g * g * gap
    st["fo"] += t if t < FO_MAX else FO_MAX
    st["fostep"] = s


def _fo_batch(st: dict[str, Any], lrs: np.ndarray, gs: np.ndarray, steps: np.ndarray):
    """The same sums as ``_fo_one``: elementwise products in the same order and a sequential
    running sum (``np.cumsum`` adds left to right), so both paths give identical floats."""
    prev = np.concatenate(([st["fostep"]], steps[:-1]))
    gap = steps - prev
    if st["fostep"] < 0:
        gap[0] = 1
    with np.errstate(over="ignore"):  # an overflow to inf is clipped, as in _fo_one
        t = np.minimum(lrs * gs * gs * gap, FO_MAX)
    fo = np.cumsum(np.concatenate(([st["fo"]], t)))[1:]
    st.update(fo=float(fo[-1]), fostep=int(steps[-1]))
    return {"fo": fo, "fostep": steps}


def _val_one(st: dict[str, Any], v: float) -> None:
    if st["v0"] != st["v0"]:  # NaN: the first validation loss
        st["v0"] = v
    st["vlast"] = v
    if v < st["vbest"]:
        st["vbest"] = v
    st["nv"] += 1


def _val_batch(st: dict[str, Any], vs: np.ndarray):
    """The first, last and lowest finite validation loss and their count: selection only, no
    float recursion."""
    k = len(vs)
    v0 = st["v0"] if st["v0"] == st["v0"] else float(vs[0])
    vbest = _running_extreme(vs, st["vbest"], True, lower=True)[0]
    nv = st["nv"] + np.arange(1, k + 1, dtype=np.int64)
    st.update(v0=v0, vlast=float(vs[-1]), vbest=float(vbest[-1]), nv=int(nv[-1]))
    return {"v0": np.full(k, v0), "vlast": vs, "vbest": vbest, "nv": nv}


Floats = list[float]
Ints = list[int]
Bools = list[bool]


class Features:
    """Feature columns of one chunk of rows (one row per accepted record). Detectors read
    ``f.<column>[i]`` (Python values: a column is indexable, a one-element tuple on the
    one-record path and a memoryview of the numpy column on the batch path) in ``step`` and
    ``f.a("<column>")`` (numpy arrays) in ``screen``.

    Each column is listed below with its type and meaning: that list is the reference, and
    ``typing.get_type_hints(Features, include_extras=True)`` reads it. The short names are the
    ones the saved state and both paths use; the meaning gives the long one. Statistics are the
    state *after* the row was folded in, carried unchanged over rows without that signal; the
    ``b_`` columns are the same state *before* the row.
    """

    n: int  # rows in this chunk

    # -- the record as logged ---------------------------------------------------------------------
    step: Annotated[Ints, "the training step"]
    rec: Annotated[Ints, "record ordinal: 1-based count of the run's accepted records"]
    loss: Annotated[Floats, "the loss (NaN where not logged)"]
    gn: Annotated[Floats, "the grad-norm (NaN where not logged)"]
    lr: Annotated[Floats, "the learning rate (NaN where not logged)"]
    val: Annotated[Floats, "the validation loss (NaN where not logged)"]
    has_loss: Annotated[Bools, "a loss was logged (a NaN value counts: it is an alarm)"]
    has_gn: Annotated[Bools, "a grad-norm was logged"]
    has_lr: Annotated[Bools, "an LR was logged"]
    has_val: Annotated[Bools, "a validation loss was logged"]
    lok: Annotated[Bools, "loss ok: logged and finite"]
    gok: Annotated[Bools, "grad-norm ok: logged, finite and >= 0"]
    lrok: Annotated[Bools, "LR ok: logged and finite"]
    vok: Annotated[Bools, "validation loss ok: logged and finite"]

    # -- the loss (values beyond CLIP are clipped) -----------------------------------------------
    nl: Annotated[Ints, "number of finite losses so far"]
    l0: Annotated[Floats, "start level (called the first loss): the run's first finite loss, or the median of "
                          "its first start_records losses when the first is a low draw below them "
                          "(start_level)"]
    l0_step: Annotated[Ints, "the step of the first loss (patience and restarts count from it)"]
    l0_n: Annotated[Ints, "how many first losses l0 is the median of: 0 while l0 is the first loss itself, "
                          "start_records once the start level replaced a low first draw (the words then "
                          "quote the median, not the loss logged at l0_step)"]
    lprev: Annotated[Floats, "the last finite loss"]
    lp2: Annotated[Floats, "the finite loss before lprev (NaN before the second loss)"]
    lstep: Annotated[Ints, "the step of the last finite loss"]
    fast: Annotated[Floats, "short-term average: EMA of the loss (alpha_fast, a half-life of one record)"]
    slow: Annotated[Floats, "loss level: winsorised EMA (alpha_slow, ~10 records), what a spike is measured "
                            "against; re-anchored on the loss when it has held below the level's noise band "
                            "for two records (a fast descent)"]
    sd: Annotated[Floats, "loss noise: EMA mean absolute deviation from the level (scaled with the level when "
                          "it is re-anchored)"]
    nsd: Annotated[Floats, "trend-free loss noise: EMA (alpha_slow) of the loss's second difference "
                           "|x - 2 lprev + lp2| / sqrt(6), winsorised at the level's band: the noise about "
                           "the loss's local trend, which a steady descent or climb does not inflate (the "
                           "level's lag does inflate sd, the more steps between records)"]
    best: Annotated[Floats, "best level: running minimum of slow (a lucky low batch does not set it)"]
    best_step: Annotated[Ints, "the step at which best last improved"]
    rbest: Annotated[Floats, "raw best: the lowest loss held for two records in a row (does not lag a fast "
                             "descent); when the start level replaces a low first draw, it starts over "
                             "from the lower of the start level and the loss held on that record"]
    rbest_step: Annotated[Ints, "the step of the record that set rbest (or that restarted it)"]
    worst: Annotated[Floats, "the highest short-term average (fast) so far"]
    top: Annotated[Floats, "the highest loss so far (raw, as logged)"]
    up_n: Annotated[Ints, "rises in a row: consecutive rises of the raw loss ending here"]
    up_base: Annotated[Floats, "the loss just before that run of rises began"]
    trend: Annotated[Floats, "loss trend: very slow EMA (alpha_trend, ~50 records), winsorised like the "
                             "level"]
    pbest: Annotated[Floats, "the trend's best that improved by at least plateau_eps (relative)"]
    pstep: Annotated[Ints, "the step of that last progress of the trend"]
    pnl: Annotated[Ints, "the count of loss records at that last progress"]
    alt: Annotated[Floats, "zig-zag rate: EMA of 'the loss changed direction' (1 = every record)"]
    amp: Annotated[Floats, "EMA of the absolute change of the loss from one record to the next"]

    # -- the grad-norm ----------------------------------------------------------------------------
    ng: Annotated[Ints, "number of finite grad-norms so far"]
    glast: Annotated[Floats, "the last finite grad-norm"]
    mu: Annotated[Floats, "usual grad-norm: EMA mean of log grad-norm (alpha_g, winsorised: one explosion "
                          "does not move it)"]
    var: Annotated[Floats, "EMA variance of log grad-norm"]
    mumax: Annotated[Floats, "the largest mu so far"]

    # -- the learning rate ------------------------------------------------------------------------
    nlr: Annotated[Ints, "number of finite LRs so far"]
    lrlast: Annotated[Floats, "the last finite LR"]
    lrstep: Annotated[Ints, "its step (an LR change is a rate per step across the gap)"]
    peak: Annotated[Floats, "the highest LR so far"]
    rev: Annotated[Ints, "LR reversals: changes of direction (warm-up then decay = 1; cyclic schedules keep "
                         "adding)"]
    lrdir: Annotated[Ints, "the direction of the LR's last change (+1, -1; 0 before any)"]

    # -- first-order work (rows with a finite LR >= 0 and grad-norm) ------------------------------
    fo: Annotated[Floats, "running sum of lr * grad_norm**2 * steps since the previous such row: "
                          "the decrease a plain gradient step would make on a linear loss"]
    fostep: Annotated[Ints, "the step of the last row folded into fo"]

    # -- the validation loss (rows with a finite one) ---------------------------------------------
    v0: Annotated[Floats, "first validation loss: the run's first finite one"]
    vlast: Annotated[Floats, "the last finite validation loss"]
    vbest: Annotated[Floats, "the lowest finite validation loss so far"]
    nv: Annotated[Ints, "number of finite validation losses so far"]

    # -- the state before this row ----------------------------------------------------------------
    b_lprev: Annotated[Floats, "lprev before this row: the previous finite loss"]
    b_lstep: Annotated[Ints, "lstep before this row: the step of the previous finite loss"]
    b_slow: Annotated[Floats, "slow before this row: the level this loss is compared with"]
    b_sd: Annotated[Floats, "sd before this row: the noise this loss is compared with"]
    b_lp2: Annotated[Floats, "lp2 before this row: the finite loss two records back"]
    b_top: Annotated[Floats, "top before this row: the highest loss logged before it"]
    b_nsd: Annotated[Floats, "nsd before this row"]
    b_mu: Annotated[Floats, "mu before this row"]
    b_var: Annotated[Floats, "var before this row"]
    b_glast: Annotated[Floats, "glast before this row: the previous finite grad-norm"]
    b_lrlast: Annotated[Floats, "lrlast before this row: the previous finite LR"]
    b_lrstep: Annotated[Ints, "lrstep before this row"]
    b_peak: Annotated[Floats, "peak before this row"]

    def __init__(self, n: int, lists: dict[str, list] | None = None) -> None:
        self.n = n
        self._arrays: dict[str, np.ndarray] | None = {}
        if lists:
            self.__dict__.update(lists)

    def a(self, name: str) -> np.ndarray:
        arrays = self._arrays
        if arrays is None:  # a one-record row (advance_one) has none until asked
            arrays = self._arrays = {}
        arr = arrays.get(name)
        if arr is None:
            arr = np.asarray(getattr(self, name))
            arrays[name] = arr
        return arr


class ArrayFeatures(Features):
    """The batch path's rows: numpy columns, each read through a ``memoryview`` on its first
    ``f.<column>`` read: ``f.<column>[i]`` gives the same Python float, int or bool as the list
    of the column would, made for that row only. Detectors step a few rows of a batch (where
    their screens say something can happen), so converting whole columns to lists for them cost
    more than the rows they read.

    A subclass, so that the one-record path's rows (:class:`RowFeatures`) have no
    ``__getattr__``: a class with one is not given CPython's specialised attribute reads, and the
    detectors read dozens of columns per record."""

    def __init__(self, n: int, arrays: dict[str, np.ndarray]) -> None:
        self.n = n
        self._arrays = arrays

    def __getattr__(self, name: str) -> memoryview:
        arrays = self.__dict__.get("_arrays")
        if arrays is not None and name in arrays:
            col = memoryview(arrays[name])
            self.__dict__[name] = col
            return col
        raise AttributeError(name)


#: The columns of a one-record row in the order advance_one lists their values: the record, the
#: state before it, the state after it.
_RECORD_NAMES = ("step", "rec", "loss", "gn", "lr", "val", "has_loss", "has_gn", "has_lr", "has_val",
                 "lok", "gok", "lrok", "vok")
_ROW_NAMES = _RECORD_NAMES + _BEFORE_NAMES + ALL_COLS
assert sorted(_ROW_NAMES) == sorted(c for c in Features.__annotations__ if c != "n"), "a column is not filled"


class RowFeatures(Features):
    """The one-record path's row: every column a slot holding a one-element tuple.

    Slots, not an instance dict: the row is built once per record and read a few dozen times by
    the detectors, and CPython (3.11) fills and reads slots with specialised instructions, where
    a dict of ~75 columns costs a hash insert per column to build and a keyed look-up per read."""

    __slots__ = _ROW_NAMES

    n = 1
    _arrays = None  # Features.a makes it if a detector asks a one-record row for an array

    def columns(self) -> dict[str, tuple]:
        """The row as ``{column: (value,)}``."""
        return {c: getattr(self, c) for c in _ROW_NAMES}


def _row_builder() -> Any:
    """``build(values) -> RowFeatures``, the values in ``_ROW_NAMES`` order: one slot store per
    column, written out (generated once, as dataclasses do) because a loop of ``setattr`` calls
    would cost more than the dict it replaces."""
    body = "\n".join(f"    r.{c} = (v[{i}],)" for i, c in enumerate(_ROW_NAMES))
    src = f"def build(v):\n    r = new(RowFeatures)\n{body}\n    return r\n"
    ns: dict[str, Any] = {"new": object.__new__, "RowFeatures": RowFeatures}
    exec(src, ns)  # noqa: S102 - the source is made above from the column names only
    return ns["build"]


_build_row = _row_builder()


def checked_params(params: dict[str, Any] | None) -> dict[str, float]:
    """The feature settings: the defaults with ``params`` over them, each checked (a ValueError
    names the bad one). ``start_records`` is a positive integer (an integral float such as 5.0
    is taken as 5): a count the one-record path compares with and the batch path slices by;
    the others are finite numbers, the EMA weights (``alpha_*``) in (0, 1], the rest >= 0."""
    out: dict[str, Any] = dict(DEFAULT_PARAMS)
    for name, v in (params or {}).items():
        if name not in DEFAULT_PARAMS:
            raise ValueError(f"unknown feature setting {name!r} (known: {', '.join(DEFAULT_PARAMS)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"feature setting {name!r} must be a finite number, got {v!r}")
        if name == "start_records":
            if v != int(v) or v < 1:
                raise ValueError(f"feature setting 'start_records' must be a positive integer, got {v!r}")
            v = int(v)
        elif name.startswith("alpha_") and not 0.0 < v <= 1.0:
            raise ValueError(f"feature setting {name!r} is an EMA weight in (0, 1], got {v!r}")
        elif v < 0:
            raise ValueError(f"feature setting {name!r} must be >= 0, got {v!r}")
        out[name] = v
    return out


class FeatureTracker:
    """Owns the running statistics of one run; turns records into feature rows."""

    def __init__(self, params: dict[str, float] | None = None, state: dict[str, Any] | None = None) -> None:
        self.params = checked_params(params)
        self.state = state if state is not None else initial_state()

    # -- one record: pure Python ---------------------------------------------------------------
    def advance_one(self, step: int, loss: float | None, gn: float | None, lr: float | None,
                    val: float | None) -> Features:
        st = self.state
        rec = st["rec"] + 1
        st["rec"] = rec
        # not logged (None) reads as NaN in the columns; has_* keeps the two apart
        lv = NAN if loss is None else float(loss)
        gv = NAN if gn is None else float(gn)
        rv = NAN if lr is None else float(lr)
        # finite: x - x is 0.0 for a finite x only (NaN for NaN and the infinities)
        lok = loss is not None and lv - lv == 0.0
        gok = gn is not None and gv - gv == 0.0 and gv >= 0.0
        lrok = lr is not None and rv - rv == 0.0
        vv = NAN if val is None else float(val)
        vok = val is not None and vv - vv == 0.0
        # the record's columns and the state before it, in _RECORD_NAMES order
        head = (step, rec, lv, gv, rv, vv, loss is not None, gn is not None, lr is not None, val is not None,
                lok, gok, lrok, vok) + _before_values(st)
        if lok:
            _loss_one(st, self.params, lv, step)
        if gok:
            _gn_one(st, self.params, gv)
        if lrok:
            _lr_one(st, rv, step)
            if gok and rv >= 0.0:
                _fo_one(st, rv, gv, step)
        if vok:
            _val_one(st, vv)
        # each column of the row is a one-element tuple: detectors read ``f.<column>[0]``
        return _build_row(head + _after_values(st))

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
            fok = gok & lrok & (b.lr >= 0.0)
        start = dict(st)  # the folds mutate st; "before" values come from here
        for mask, cols, run in (
            (lok, LOSS_COLS, lambda m: _loss_batch(st, self.params, b.loss[m], steps[m])),
            (gok, GN_COLS, lambda m: _gn_batch(st, self.params, b.grad_norm[m])),
            (lrok, LR_COLS, lambda m: _lr_batch(st, b.lr[m], steps[m])),
            (fok, FO_COLS,
             lambda m: _fo_batch(st, b.lr[m], b.grad_norm[m], steps[m])),
            (arrays["vok"], VAL_COLS, lambda m: _val_batch(st, b.val_loss[m])),
        ):
            if mask.all():  # the common case: every row carries the signal, no gather needed
                out = run(mask)
                for c in cols:
                    arrays[c] = out[c]
                    if c in _BEFORE_OF:
                        arrays[_BEFORE_OF[c]] = np.concatenate(([start[c]], out[c][:-1]))
                continue
            if not mask.any():
                for c in cols:
                    arrays[c] = np.full(n, start[c])
                    if c in _BEFORE_OF:
                        arrays[_BEFORE_OF[c]] = arrays[c]
                continue
            out = run(mask)
            incl = np.cumsum(mask)  # how many values were folded in up to and including each row
            excl = incl - mask
            for c in cols:
                # ext[0] = the state before this batch, ext[j] = after the j-th folded value
                ext = np.concatenate(([start[c]], out[c]))
                arrays[c] = ext[incl]
                if c in _BEFORE_OF:
                    arrays[_BEFORE_OF[c]] = ext[excl]
        return ArrayFeatures(n, arrays=arrays)

    def to_state(self) -> dict[str, Any]:
        return {"params": self.params, "state": dict(self.state)}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "FeatureTracker":
        return cls(d["params"], dict(d["state"]))


def lr_ramping(f: "Features", i: int) -> bool:
    """Is the LR ramping up on row ``i``: rising on this record, with no reversal yet (a warm-up,
    one-cycle before its peak)? Not merely "its last change was upward" (``lrdir``): after a
    warm-up into a constant LR, or a single raise, that would stay true for the rest of the run."""
    return bool(f.lrok[i] and f.rev[i] == 0 and f.b_lrlast[i] > 0.0 and f.lr[i] > f.b_lrlast[i])
