"""Did an action work? The run's course as the Actor sees it, and the verdict on one action.

:class:`RunLevels` keeps the recent records (fed by the Monitor's background thread, or by a
loop that calls ``Actor.observe``) and answers: the loss and grad-norm level before a step, the
level since, the run's peak LR and the lowest LR at which it still made progress.

:func:`judge` gives an applied action its verdict once its verification window has passed
(``records`` records and ``steps`` steps, whichever comes later): ``verified`` when the loss is
back under its level before the incident and the grad-norm back within ``GN_RANGE`` times its
level then; ``failed`` otherwise, and at once when a non-finite loss follows the action.
An LR raise is verified when the loss kept falling and stayed finite.
"""

from __future__ import annotations

import enum
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from statistics import median
from typing import Any

__all__ = ["Check", "RunLevels", "Verdict", "judge"]

LEVEL_RECORDS = 20  # records a level is the median of
GN_RANGE = 3.0  # the grad-norm is back "in range" within this factor of its level before
PROGRESS_BLOCK = 50  # records per block when tracking the lowest LR that made progress
PROGRESS_DROP = 0.01  # a block made progress when its median loss fell by this fraction


class Verdict(str, enum.Enum):
    VERIFIED = "verified"  # the action had the effect it was taken for
    FAILED = "failed"  # it did not: the incident climbs its ladder


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class RunLevels:
    """The recent records of a run (bounded), read by the Actor in the training thread.

    Each record gets a sequence number, so that a window counts records logged after an action
    even when a rollback sends the step counter back."""

    def __init__(self, keep: int = 4096) -> None:
        self._recs: deque[tuple[int, int, Any, Any]] = deque(maxlen=keep)  # (seq, step, loss, grad_norm)
        self._lock = threading.Lock()
        self.seq = 0  # records observed so far
        self.nonfinite: deque[tuple[int, int]] = deque(maxlen=64)  # (seq, step) of non-finite losses
        self.peak_lr = 0.0
        self.lowest_progress_lr: float | None = None
        self._block: list[tuple[float, float]] = []  # (loss, lr) of the block being filled
        self._prev_block_level: float | None = None

    def observe(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            for r in records:
                step, loss, gn, lr = r.get("step"), r.get("loss"), r.get("grad_norm"), r.get("lr")
                if not isinstance(step, int):
                    continue
                self.seq += 1
                self._recs.append((self.seq, step, loss, gn))
                if loss is not None and not _finite(loss):
                    self.nonfinite.append((self.seq, step))
                if _finite(lr) and lr > self.peak_lr:
                    self.peak_lr = float(lr)
                if _finite(loss) and _finite(lr):
                    self._track_progress(float(loss), float(lr))

    def _track_progress(self, loss: float, lr: float) -> None:
        """The lowest LR of a block of PROGRESS_BLOCK records at a steady LR (within 25 %) whose
        median loss fell by PROGRESS_DROP from the block before: an LR known to make progress."""
        self._block.append((loss, lr))
        if len(self._block) < PROGRESS_BLOCK:
            return
        level = median(x for x, _ in self._block)
        lrs = [y for _, y in self._block]
        prev, self._prev_block_level = self._prev_block_level, level
        self._block = []
        steady = min(lrs) > 0 and max(lrs) <= 1.25 * min(lrs)
        if prev is not None and steady and level < prev * (1 - PROGRESS_DROP):
            if self.lowest_progress_lr is None or min(lrs) < self.lowest_progress_lr:
                self.lowest_progress_lr = min(lrs)

    def rewind(self, step: int) -> None:
        """The run was rolled back to ``step``: the progress block restarts (the records stay:
        they are what happened, and windows count by sequence number)."""
        with self._lock:
            self._block = []
            self._prev_block_level = None

    def _select(self, lo: int | None = None, hi: int | None = None) -> list[tuple[int, int, Any, Any]]:
        with self._lock:
            return [r for r in self._recs if (lo is None or r[1] >= lo) and (hi is None or r[1] < hi)]

    def level_before(self, step: int, n: int = LEVEL_RECORDS) -> tuple[float | None, float | None]:
        """(loss, grad-norm) medians of the last ``n`` finite values before ``step``."""
        recs = self._select(hi=step)
        losses = [r[2] for r in recs if _finite(r[2])][-n:]
        gns = [r[3] for r in recs if _finite(r[3])][-n:]
        return (median(losses) if losses else None, median(gns) if gns else None)

    def level_now(self, n: int = 5) -> float | None:
        losses = [r[2] for r in self.last(n) if _finite(r[2])]
        return median(losses) if losses else None

    def last(self, n: int) -> list[tuple[int, int, Any, Any]]:
        """The last ``n`` records (seq, step, loss, grad_norm), oldest first."""
        with self._lock:
            k = min(n, len(self._recs))
            return [self._recs[-i] for i in range(k, 0, -1)]

    def since(self, step: int) -> list[tuple[int, int, Any, Any]]:
        """The records whose step is at or after ``step`` (since the last rewind past it)."""
        with self._lock:
            out = []
            for r in reversed(self._recs):
                if r[1] < step:
                    break
                out.append(r)
        return out[::-1]

    def nonfinite_after(self, seq: int, but_step: int) -> int | None:
        """The step of a non-finite loss recorded after ``seq`` at a step other than ``but_step``."""
        with self._lock:
            return next((st for sq, st in self.nonfinite if sq > seq and st != but_step), None)

    def last_step(self) -> int | None:
        with self._lock:
            return self._recs[-1][1] if self._recs else None

    def first_after(self, seq: int) -> tuple[int, int, Any, Any] | None:
        with self._lock:
            if self.seq <= seq or not self._recs:
                return None
            i = len(self._recs) - (self.seq - seq)
            return self._recs[max(0, i)]


@dataclass
class Check:
    """An applied action waiting for its verdict."""

    incident: str
    condition: str
    rung: int
    action: dict[str, Any]
    step: int  # applied at
    seq: int  # RunLevels.seq when applied: the window is the records after it
    pre_loss: float | None  # the loss level before the incident began
    pre_gn: float | None
    loss_at_action: float | None
    evidence: dict[str, Any] = field(default_factory=dict)
    first_step_after: int | None = None
    failed_early: str | None = None  # set by Actor.note_nonfinite


def judge(check: Check, levels: RunLevels, records: int, steps: int) -> tuple[Verdict | None, str]:
    """The verdict on ``check`` (None while its window has not passed), and why. Cheap while the
    window runs (a few comparisons), so the Actor can ask at every step."""
    if check.failed_early is not None:
        return Verdict.FAILED, check.failed_early
    # the record of the action's own step may reach the levels after the action (the Monitor feeds
    # them from its background thread): only a later step's non-finite loss judges the action
    again = levels.nonfinite_after(check.seq, check.step)
    if again is not None:
        return Verdict.FAILED, f"the loss was non-finite again at step {again}"
    n_after = levels.seq - check.seq
    if n_after < records:
        return None, "window not over"
    if check.first_step_after is None:
        first = levels.first_after(check.seq)
        check.first_step_after = first[1] if first is not None else None
    tail = levels.last(LEVEL_RECORDS)
    if check.first_step_after is None or not tail or tail[-1][1] - check.first_step_after + 1 < steps:
        return None, "window not over"
    tail = [r for r in tail if r[0] > check.seq]
    losses = [r[2] for r in tail if _finite(r[2])]
    gns = [r[3] for r in tail if _finite(r[3])]
    if not losses:
        return None, "no loss recorded in the window"
    loss = median(losses)
    if check.condition == "lr_too_low":
        ref = check.loss_at_action
        if ref is None or loss < ref:
            return Verdict.VERIFIED, f"the loss kept falling ({ref if ref is None else f'{ref:.4g}'} -> {loss:.4g})"
        return Verdict.FAILED, f"the loss did not fall after the raise ({ref:.4g} -> {loss:.4g})"
    if check.pre_loss is None:
        return Verdict.VERIFIED, f"the loss stayed finite (level {loss:.4g}; none known before the incident)"
    if loss > check.pre_loss:
        return Verdict.FAILED, (f"the loss level {loss:.4g} is not back under {check.pre_loss:.4g}, its level "
                                f"before the incident")
    if check.pre_gn is not None and gns and median(gns) > GN_RANGE * check.pre_gn:
        return Verdict.FAILED, (f"the grad-norm level {median(gns):.4g} is above {GN_RANGE:g}x its level before "
                                f"the incident ({check.pre_gn:.4g})")
    return Verdict.VERIFIED, (f"the loss level {loss:.4g} is back under {check.pre_loss:.4g}, its level before "
                              f"the incident" + (f"; grad-norm {median(gns):.4g} in range" if gns else ""))
