"""Slow progress: the loss is still falling at a steady pace, so the LR is what limits it."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import fmt
from .lost import blew_up
from .raise_lr import RaiseLRDetector
from .types import Action


def _bitlen(step: int) -> int:
    return step.bit_length() if step > 0 else 0


def _midpoint(k: int) -> int:
    """The middle of the steps of bit length ``k`` (3 x 2^(k-2): 384 for 256..511); none below 2."""
    return 3 << (k - 2) if k >= 2 else 1 << 62


def _midpoint_arr(e: np.ndarray) -> np.ndarray:
    """:func:`_midpoint` of an array of bit lengths (as int64)."""
    e = e.astype(np.int64)
    return np.where(e >= 2, np.left_shift(np.int64(3), np.maximum(e - 2, 0)), np.int64(1) << 62)


class SlowProgressDetector(RaiseLRDetector):
    """A too-small LR, seen from one run: the loss keeps falling at an almost constant pace
    instead of dropping fast and then flattening.

    Checked once per doubling of the step (at the first record at or after each power of two),
    so with O(1) memory (one checkpoint per power of two, at most 64): with ``T(s)`` the loss
    level (``features.slow``, ~10-record memory: the 50-record trend lags too much this early)
    at step ``s`` and ``L0`` the first loss, at step ``t`` against the checkpoint
    ``c`` one doubling earlier::

        h = (T(c) - T(t)) / (L0 - T(c))   # progress in the last doubling / progress before it

    A healthy run made most of its progress early: ``h`` is small (0.01-0.05 on the benchmark's
    healthy runs; a power-law LM curve gives ~0.3/sqrt(c)). An exponential descent with time
    constant tau gives exactly ``h = exp(-c / tau)``: a run still within ~1.4 tau of its start
    at step 256 is flagged (its LR x10 sibling would be there 10x sooner). On the benchmark
    ``ratio`` 0.25 gave F1 0.81 for "LR too low" with no false alarm; 0.35 and 0.5 lost recall
    (0.74, 0.70) and removed none. A run whose LR is far too small descends almost linearly: ``h`` is ~1
    (the second half of the time makes as much progress as the first). **warning** with
    ``scale_lr`` x``factor`` when ``h >= ratio``, ``t >= min_step``, the recent progress is
    real (>= ``z`` noise units of the loss), came at a pace (each half of the doubling, split at
    the first record at or after its midpoint, made at least ``steady`` of it: an exponential
    descent flagged at ``h >= 0.25`` makes 1/3 to 1/2 in either half, while a drop at one moment,
    such as a multi-epoch fine-tune's when the next epoch begins or a scheduled LR step, makes
    nearly all of it in one), the checkpoint's level was not above the best level
    reached before it (by ``z`` noise units: a fall from a relapse is a recovery, not the LR's
    pace; softmax at 10x LR relapses during its warm-up and falls fast after it) and the LR was
    steady (not warming up since ``c``, not decayed below ``decayed`` x its peak: a slow tail of
    a decayed schedule is by design). The doublings are in steps (training time is what the pace
    is about), but the run must also have ``min_records`` loss records: a log thinned to every
    10th row, or one whose step column counts 7 per record, reaches step 256 while its loss is
    still in its steep first phase by the run's own clock (on the benchmark's healthy runs, 26
    such logs out of 76 were told to raise the LR; none at full cadence).
    Resolves at the next checkpoint where ``h < ratio / 2`` or once the LR has been raised 2x.

    Parameters
    ----------
    ratio : float, default 0.25
    min_step : int, default 256
    min_records : int, default 256
    steady : float, default 0.1
        The share of the doubling's progress each of its halves must hold. Set by: a 3-epoch
        Alpaca fine-tune (bench/real/histories) fell 1.08 -> 0.72 between steps 256 and 512, all
        of it at the epoch boundary (step ~406), and was told to raise its LR x3. On the
        benchmark, 0.1 and 0.2 change no alert; 0.3 loses three LR-too-low runs.
    z : float, default 2.0
    decayed : float, default 0.3
    factor : float, default 3.0
    blowup : float, default 1.5
        Silent once the loss level (``features.worst``, the fast EMA's maximum) has been at or above
        this x the first loss: the run blew up, and the steady fall after it is a recovery (its LR
        is too high, if anything). 1.5x is the benchmark labels' "lost: above 1.5x the start".
        The same test as the lost-run rule's (``lost.blew_up``, against ``abs(first loss)``).

    Examples
    --------
    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> out = [a for s in range(600) for a in eng.update(Record(s, 2.3 - 0.002 * s, lr=1e-4))]
    >>> [(a.kind, a.detector, a.step, a.action.params) for a in out]
    [('plateau', 'slow_progress', 256, {'factor': 3.0})]

    References
    ----------
    AutoTrainer "slow convergence" (Zhang et al., ICSE'21); Smith, "A disciplined approach to
    neural network hyper-parameters" (a too-small LR shows as slow, steady descent).
    """

    name = "slow_progress"
    kind = "plateau"
    static_screen = True

    def __init__(self, ratio: float = 0.25, min_step: int = 256, z: float = 2.0,
                 decayed: float = 0.3, factor: float = 3.0, blowup: float = 1.5,
                 min_records: int = 256, steady: float = 0.1) -> None:
        super().__init__(ratio=ratio, min_step=min_step, z=z, decayed=decayed, factor=factor, blowup=blowup,
                         min_records=min_records, steady=steady)
        # cps: str(k) -> [trend, peak LR, step, best level] at the first record of bit length k
        self.k_done = -1  # the checkpoint covers many rows (the active screen passes some): once each
        # mids: str(k) -> [level, step] at the first record at or after the middle of bit length k
        self.mids: dict[str, list[float]] = {}
        self.mid_k = -1  # the bit length of the last midpoint kept (derived from mids, not saved)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "k_done": self.k_done, "mids": self.mids}

    def set_state(self, d: dict[str, Any]) -> None:
        super().set_state(d)
        self.k_done = d["k_done"]
        self.mids = d.get("mids", {})  # saved before midpoints were kept: none known, no guard
        self.mid_k = max((int(k) for k in self.mids), default=-1)
        if any(len(cp) != 4 for cp in self.cps.values()):
            # saved before checkpoints kept the best level: the engine starts this detector afresh
            raise ValueError("slow_progress checkpoints without the best level")

    def screen(self, f):
        step = f.a("step")
        pos = np.maximum(step, 0)
        _, e = np.frexp(pos.astype(np.float64))  # bit length of positive ints
        e = np.where(step > 0, e, 0)
        # the half of its doubling a step is in: 2 * bit length, + 1 from the midpoint on
        half = 2 * e + (pos >= _midpoint_arr(e))
        cross = np.ones(len(step), dtype=bool)
        cross[1:] = half[1:] > half[:-1]
        return cross

    def step(self, f, i: int) -> None:
        step = f.step[i]
        self.resolve_if_raised(f, i)
        k = _bitlen(step)
        if k > self.mid_k and step >= _midpoint(k) and f.nl[i] > 0:
            self.mids[str(k)] = [f.slow[i], step]
            self.mid_k = k
        if k <= self.k_done:
            return
        self.k_done = k
        if f.nl[i] == 0:
            return
        trend = f.slow[i]
        peak = f.peak[i]
        self.cps[str(k)] = [trend, peak, step, f.best[i]]
        prev = self.cps.get(str(k - 1))
        if prev is None or step < self.min_step or f.nl[i] < self.min_records:
            return
        t_c, peak_c, _, best_c = prev
        l0 = f.l0[i]
        made = l0 - t_c
        recent = t_c - trend
        h = recent / made if made > 0.0 else 0.0
        if self.alert is not None:
            if h < 0.5 * self.ratio:
                self.close_episode(step, f"progress has slowed down normally (h={fmt(h)})")
            return
        if h < self.ratio or recent < self.z * f.sd[i]:
            return
        if self.recovering(t_c, best_c, f.sd[i]):
            return  # the checkpoint sat above the best level: the fall since is a recovery
        mid = self.mids.get(str(k - 1))
        if mid is not None and prev[2] < mid[1] < step and \
                min(t_c - mid[0], mid[0] - trend) < self.steady * recent:
            return  # the progress came in one drop (an epoch boundary, an LR step), not at a pace
        if blew_up(f.worst[i], l0, self.blowup):
            return  # the loss blew up earlier: a steady fall now is the recovery, and the LR too high
        if peak == peak and peak_c == peak_c and peak > peak_c * 1.001:
            return  # the LR was still rising (warm-up): the pace is the schedule's
        lr = f.lr[i] if f.lrok[i] else None
        if lr is not None and peak > 0.0 and lr < self.decayed * peak:
            return  # a decayed schedule's slow tail
        self.lr_at_alert = lr if lr is not None else 0.0
        ev = {"trend": trend, "trend_at_checkpoint": t_c, "checkpoint_step": int(prev[2]),
              "first_loss": l0, "h": h}
        if lr is not None:
            ev["lr"] = lr
        self.open_episode(step, "warning",
                          f"slow progress: the loss fell {fmt(t_c)} -> {fmt(trend)} since step "
                          f"{int(prev[2])}, {fmt(100 * h)}% of all the progress before it: the LR "
                          f"is limiting training", ev,
                          Action("scale_lr", {"factor": self.factor},
                                 f"The loss is still falling at a steady, almost linear pace: the "
                                 f"steps are too small. Raise the LR x{fmt(self.factor)} (or run an "
                                 "LR range test)."))
