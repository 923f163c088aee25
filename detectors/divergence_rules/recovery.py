"""Recovery: when a divergence episode closes.

Condition: both the loss level and its 2-record average (``fast``) stay below
``resolve_ratio`` x best (progress scale) for ``rearm`` consecutive loss records. The
winsorised level alone lags a blow-up, hence the average too; a relapse within the window is
the same episode, not a new alert (the count restarts). A *lost* episode (:mod:`.lost`,
:mod:`.first_loss`) also needs the trend back below ``stuck`` x the first loss: a model dead
at chance sits at its best, which is where it started, and "back near its best" would close and
re-open the same episode every ``rearm`` records. Closing forgets the counted spikes
(:func:`.spikes.forget`): a new episode needs new ones.

State (on the detector): ``ok_since``, the loss-record count since which the run looks
recovered (-1: it does not).

Parameters
----------
resolve_ratio : float, default 1.15
    How close to its best the level and the average must be.
    Set by: on the level alone, one blow-up was reported as two episodes.
rearm : int, default 50
    Records the recovery must hold.
    Set by: five alerts on one chaotic run at 100x its LR became two; 50, 100 and 200 measured
    the same on the benchmark.

``stuck`` (:mod:`.lost`) is shared.

Examples
--------
A slow zig-zag climb caught by the sustained rule, then the loss back at its best:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.divergence import DivergenceDetector
>>> from losswatch.detectors.types import Record
>>> losses = [1.0] * 20 + [1.0 + 0.05 * k + (0.04 if k % 2 else -0.04) for k in range(1, 40)] + [1.0] * 80
>>> alerts = drive(DivergenceDetector(), map(Record, range(len(losses)), losses))
>>> [(a.step, a.event, a.resolved_step) for a in alerts]
[(46, 'raised', None), (46, 'resolved', 129)]
>>> alerts[1].evidence["resolution"]
'loss level back to 1 (best 1) for 50 records'

References
----------
Prometheus alerting rules' ``keep_firing_for``: an alert stays firing for a while after its
condition clears, so that it does not flap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt
from ..progress import _pratio, pratio_arr
from . import spikes
from .verdict import LOST_RULES

if TYPE_CHECKING:
    from ..divergence import DivergenceDetector
    from ..features import Features


def track(d: DivergenceDetector, f: Features, i: int, step: int, best: float, l0: float,
          slow: float, nl: int) -> None:
    """While an episode is open, on each loss record: count the recovered records; close the
    episode after ``rearm`` of them."""
    a = d.alert
    assert a is not None  # called while an episode is open
    if _pratio(slow, best, l0) < d.resolve_ratio and _pratio(f.fast[i], best, l0) < d.resolve_ratio and \
            (a.evidence.get("rule") not in LOST_RULES or f.trend[i] < d.stuck * l0):
        if d.ok_since < 0:
            d.ok_since = nl
        if nl - d.ok_since + 1 >= d.rearm:
            d.close_episode(step, f"loss level back to {fmt(slow)} (best {fmt(best)}) "
                                  f"for {d.rearm} records")
            d.ok_since = -1
            spikes.forget(d)
    else:
        d.ok_since = -1  # a relapse: the same episode, not a new alert


def screen(d: DivergenceDetector, f: Features) -> np.ndarray:
    """While an episode is open: the rows where the recovery count can change: recovered rows
    (counted), and the first not-recovered loss row after a recovered one (the count restarts
    there)."""
    best, l0, lok = f.a("best"), f.a("l0"), f.a("lok")
    ok = lok & ~(pratio_arr(f.a("slow"), best, l0) >= d.resolve_ratio) & \
        ~(pratio_arr(f.a("fast"), best, l0) >= d.resolve_ratio)
    rows = np.flatnonzero(lok)
    if len(rows) == 0:
        return ok
    ok_c = ok[rows]
    after_ok = np.concatenate(([True], ok_c[:-1]))  # the first loss row: state unknown here
    mask = np.zeros(f.n, dtype=bool)
    mask[rows[ok_c | after_ok]] = True
    return mask
