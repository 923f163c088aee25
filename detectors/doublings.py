"""Checkpoints on a doubling grid of the step: the rules that compare the loss level across
doublings of training time (slow progress, a descent held back by the LR) look at the first
record at or after each ``2 ** (j / per_doubling)``, so with O(1) memory and the same points
whatever the logging interval."""

from __future__ import annotations

import numpy as np

_EXACT_FLOAT = 2 ** 52  # steps up to here are exact in a float64, with room for the squaring's rounding


def checkpoint_index(step: int, per_doubling: int) -> int:
    """The checkpoint a step belongs to: the bit length of ``step ** per_doubling`` (exact
    integers), which grows by one each time the step passes ``2 ** (j / per_doubling)``."""
    return (step ** per_doubling).bit_length() if step > 0 else 0


def checkpoint_rows(step: np.ndarray, per_doubling: int) -> np.ndarray:
    """A conservative mask of the rows where :func:`checkpoint_index` may change (a batch screen:
    the rule re-checks the index in Python and acts once per checkpoint)."""
    if len(step) == 0:
        return np.zeros(0, dtype=bool)
    lo, hi = int(step.min()), int(step.max())
    if checkpoint_index(lo, per_doubling) == checkpoint_index(hi, per_doubling):
        # no crossing inside the batch (most batches once the doublings are long): its first row
        # (a crossing since the batch before) and the row after it, as the general case passes
        quiet = np.zeros(len(step), dtype=bool)
        quiet[:2] = True
        return quiet
    if hi > _EXACT_FLOAT:
        # past 2^53 a float64 step rounds by more than a row's gap: exact integers instead
        idx = [checkpoint_index(int(s), per_doubling) for s in step.tolist()]
        exact = np.ones(len(step), dtype=bool)
        exact[1:] = np.asarray(idx[1:]) != np.asarray(idx[:-1])
        return exact
    with np.errstate(over="ignore"):
        # the bit length of step ** per_doubling, in floats: rounding may move a crossing by
        # one row, so the rows on either side of each crossing are passed too
        _, e = np.frexp(np.maximum(step, 0).astype(np.float64) ** per_doubling)
    e = np.where(step > 0, e, 0)
    cross = np.ones(len(step), dtype=bool)
    cross[1:] = e[1:] != e[:-1]
    cross[:-1] |= cross[1:]
    cross[1:] |= cross[:-1].copy()
    return cross
