"""Downsampling a step series for plotting without hiding what matters.

Method ``minmax``: the series is cut into equal-count buckets of consecutive steps and from each
bucket we keep the real records (never averages) at: the minimum and the maximum loss, the
maximum grad-norm, and the first record with any non-finite value (NaN or +-Infinity). So a spike
or a NaN is never smoothed away, and every returned point is a step that really happened.
At most 4 points per bucket, buckets = max_points // 4, so the result has <= max_points points.
"""

from __future__ import annotations

import numpy as np

from losswatch.detectors.batch import column_array

from .stores.base import VALUE_FIELDS, Columns

METHOD = "minmax"


def downsample(cols: Columns, max_points: int) -> tuple[Columns, int]:
    """Rows of ``cols`` kept by the ``minmax`` method; returns (kept, number of buckets).

    Examples
    --------
    >>> c = Columns(step=list(range(100)), loss=[1.0] * 100, grad_norm=[None] * 100, lr=[None] * 100,
    ...             val_loss=[None] * 100, ts=[None] * 100, extra=[None] * 100)
    >>> c.loss[37] = 50.0; c.loss[80] = float("nan")
    >>> kept, buckets = downsample(c, 8)
    >>> buckets, 37 in kept.step, 80 in kept.step, len(kept) <= 8
    (2, True, True, True)
    """
    n = len(cols)
    if n <= max_points:
        return cols, 0
    buckets = max(1, max_points // 4)
    arrays = {f: column_array(getattr(cols, f)) for f in VALUE_FIELDS}
    loss, grad = arrays["loss"][0], arrays["grad_norm"][0]
    # a value is "non-finite" only if logged (a None is NaN in the arrays: the mask tells them apart)
    bad = np.zeros(n, dtype=bool)
    for values, logged in arrays.values():
        bad |= logged & ~np.isfinite(values)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    keep: set[int] = set()
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        before = len(keep)
        for a, fn in ((loss, np.nanargmin), (loss, np.nanargmax), (grad, np.nanargmax)):
            seg = a[lo:hi]
            fin = np.isfinite(seg)
            if fin.any():
                keep.add(lo + int(fn(np.where(fin, seg, np.nan))))
        badseg = np.flatnonzero(bad[lo:hi])
        if badseg.size:
            keep.add(lo + int(badseg[0]))
        if len(keep) == before:
            keep.add(lo)   # nothing logged in the bucket: keep its first step so the x-axis stays honest
    idx = sorted(keep)
    return cols.take(idx), buckets
