"""Held back: the loss made no progress while the LR sat high and fell once the schedule lowered
the LR. The LR was too high for the run to descend: it is unstable at that LR, not lost.

Condition, checked once per quarter doubling of the step (the first loss record at or after each
``2 ** (j / 4)``, :mod:`..doublings`: the same points at any logging interval), with the loss
level (``features.slow``) and the last logged LR at three checkpoints ``b``, ``c``, ``t`` one
doubling apart (``t`` now, ``c`` = ``t / 2``, ``b`` = ``t / 4``):

- **held at a high LR**: from ``b`` to ``c`` the LR did not rise (no new peak: a warm-up is the
  schedule's) and the level fell by less than ``stall_z`` noise units: no progress over a whole
  doubling of training time. The noise unit is ``features.sd`` at ``c``, the noise of the loss
  while it stood still: during the fall that follows, the noise estimate of a sparse log also
  carries the level's lag (the CS336 run below, every 10th row kept: 0.47 after the fall began,
  0.10 at ``c``);
- **the LR came down**: the LR at ``t`` is at most ``anneal`` x the LR at ``c``;
- **and the loss followed it down**: from ``c`` to ``t`` the level fell by ``fall_z`` noise units or
  more *and* by ``held_share`` of the progress made before ``c`` (first loss - level at ``c``) or
  more (so only on a log that begins where training began, :func:`~losswatch.detectors.progress.logged_from_start`:
  an excerpt's first loss is not the run's start, and the progress before it is unknown),
  spread over the doubling (each of its quarters, between the checkpoints, made ``steady``
  of that fall or more: a step decay of a multistep schedule, or an epoch boundary of a
  multi-epoch fine-tune, drops the loss in a few records; a fall that follows the LR as it
  comes down is spread over the doubling).

A too-small LR's descent slows when the LR is cut; an LR near its best makes progress at its
peak and settles as it decays. A loss that stands still for a doubling at a high LR and then
falls as soon as the LR is lowered was held back by the LR: its noise floor (SGD and Adam
alike) scales with the LR, and at the peak that floor was where the loss sat. The advice comes
after the fact (the schedule already lowered the LR) and says so: the peak LR was too high.
Silent when an episode of the detector (a relapse, a zig-zag) closed during these two
doublings: the run was told already, one verdict. The episode closes at a later checkpoint
where the fall over the last doubling is below half of ``held_share`` of the progress (the
descent the lower LR allowed has settled) or when the LR rises back to the LR it stood still
at (a restart, a cyclic schedule).

Parameters
----------
stall_z : float, default 1.0
    Noise units the level may fall over the held doubling and still count as no progress.
    Set by: the CS336 LM at peak LR 3e-2 (tune part of bench/real, labelled LR too high) fell
    0.6 noise units over steps 730-1450 (3.83 -> 3.79); a healthy LM at its peak (the CS336
    sweep's LR 1e-3 run, the speedrun and llm.c GPT-2 logs of the tune part) falls by many
    noise units per doubling.
fall_z : float, default 3.0
    Noise units the level must fall from ``c`` to now. Set by (bench/score.py, seeds 0-1, and
    held-out seeds 2-7): at 2.0 (with the noise measured now) the noisy least-squares runs at
    10x LR (labelled healthy: their per-record noise is as large as the loss gained by
    annealing) were told at steps 256-363, five false alarms on seeds 2-7; 3.0 adds none. The
    CS336 run falls 10.7 units.
anneal : float, default 0.7
    The LR now against the LR at ``c``: the LR has come down by 30 % or more over the doubling
    (a cosine decay takes the CS336 run's LR x0.66 between steps 11600 and 23200 when its step
    column is x10, x0.48 between 1450 and 2900 as logged).
held_share : float, default 0.25
    The least share of the progress made before ``c`` that the fall from ``c`` to now must be.
    Set by (bench/score.py, seeds 0-1, and held-out seeds 2-7): healthy GPT Adam runs at 10x
    LR stand on a plateau and drop a second time while their multistep or cosine schedule
    lowers the LR (an emergent drop that a constant LR would show too), at 0.13-0.20 of their
    progress with every other condition met; 0.25 keeps 25 % above them. The CS336 run fell
    3.79 -> 2.94 between steps 1450 and 2900, 0.35 of its progress from its first logged loss
    (6.23). A run that anneals to its floor after converging gains a few percent.
steady : float, default 0.1
    The least share of that fall each quarter of the doubling (between the checkpoints) must
    make: a fall that follows a decaying LR gives 0.12-0.44 in each (the CS336 run); one drop
    gives ~0 in the others. A 3-epoch Alpaca fine-tune (tune part, healthy) with its step
    column x10 drops at its epoch boundaries while its linear decay halves the LR; with halves
    instead of quarters the level's lag spread one drop over both and it was told.
min_loss_records : int, default 10
    Loss records at ``b``: the level (~10-record memory) is past the run's first records.

``min_records`` (30, loss records before any rule is tried) and ``factor`` (0.3) are the
detector's.

Examples
--------
A loss that falls to 3.7 in the warm-up, stands at ~3.9 while a cosine schedule keeps the LR
near its peak, and falls as the LR decays:

>>> import math, random
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.oscillation import OscillationDetector
>>> from losswatch.detectors.types import Record
>>> r = random.Random(0)
>>> def lr(s): return 0.03 * min(1.0, s / 250) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / 5000)))
>>> def loss(s): return max(3.9 - 0.0008 * max(0, s - 1600), 2.0) if s > 250 else 6.2 - 0.01 * s
>>> recs = [Record(s, loss(s) + r.gauss(0, 0.05), lr=lr(s)) for s in range(10, 5000, 10)]
>>> [(a.step, a.evidence["rule"], a.action.params) for a in drive(OscillationDetector(), recs)][:1]
[(3450, 'held_back', {'factor': 0.3})]

References
----------
bench/real/histories/xiamishaonian111__cs336__experiments-lr-sweep-3e-2-metrics-jsonl.csv
(provenance in bench/real/SOURCES.md): a CS336 LR sweep whose run at peak LR 3e-2 stands at
3.7-4.0 while the LR is at its peak and only comes down as the cosine decay lowers it; the
author calls 3e-2 the edge of stability. Smith, "A disciplined approach to neural network
hyper-parameters" (2018); Mandt, Hoffman and Blei, "Stochastic gradient descent as approximate
Bayesian inference" (2017): the stationary spread of SGD around a minimum grows with the LR.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import fmt
from ..doublings import checkpoint_index, checkpoint_rows
from ..progress import logged_from_start

if TYPE_CHECKING:
    from ..features import Features
    from ..oscillation import OscillationDetector

#: checkpoints per doubling of the step: four, so that the fall from ``c`` to now is seen in
#: four parts and one drop cannot pass for a spread fall (with two, the level's ~10-record lag
#: spreads a drop that lands near the middle over both halves)
PER_DOUBLING = 4


def observe(d: OscillationDetector, f: Features, i: int) -> bool:
    """Keep the level, the LR, the peak, the loss-record count and the noise at the first loss
    record of each checkpoint (the last two doublings); True on the record that starts a
    checkpoint. A row without a loss (an evaluation on a line of its own) does not start one:
    the checkpoint waits for the next loss record (:func:`screen` passes it). A log whose
    evaluations have rows of their own, or whose training loss is logged less often than them,
    crosses most checkpoints on such rows: the CS336 LR sweep (bench/real, LR too high) kept
    every 10th training loss beside its evaluations crossed nine in ten there, and skipping them
    left no three checkpoints to compare."""
    k = checkpoint_index(int(f.step[i]), PER_DOUBLING)
    if k <= d.held_k or not f.lok[i]:
        return False
    d.held_k = k
    lr = f.lrlast[i] if f.nlr[i] > 0 else math.nan
    peak = f.peak[i] if f.nlr[i] > 0 else math.nan
    d.held_cps[str(k)] = [f.slow[i], int(f.step[i]), lr, peak, int(f.nl[i]), f.sd[i]]
    for old in [key for key in d.held_cps if int(key) < k - 2 * PER_DOUBLING]:
        del d.held_cps[old]
    return True


def screen(f: Features) -> np.ndarray:
    """The rows where :func:`observe` may start a checkpoint: the crossings of the doubling grid
    (:func:`~losswatch.detectors.doublings.checkpoint_rows`) and, in a batch with rows without a
    loss, the first loss record at or after each, and the batch's first loss record (a crossing
    on a row without a loss at the end of the batch before)."""
    rows = checkpoint_rows(f.a("step"), PER_DOUBLING)
    lok = f.a("lok")
    if lok.all():
        return rows
    at = np.flatnonzero(lok)
    if len(at):
        after = np.searchsorted(at, np.flatnonzero(rows))
        rows = rows.copy()
        rows[at[after[after < len(at)]]] = True
        rows[at[0]] = True
    return rows


def _points(d: OscillationDetector) -> tuple[list[float], list[float], list[list[float]]] | None:
    """The checkpoints ``b`` (two doublings back), ``c`` (one doubling back) and those from ``c``
    to now (the ones a sparse log skipped are left out), or None when ``b``, ``c`` or now lacks
    one."""
    k = d.held_k
    b, c = d.held_cps.get(str(k - 2 * PER_DOUBLING)), d.held_cps.get(str(k - PER_DOUBLING))
    if b is None or c is None or str(k) not in d.held_cps:
        return None
    return b, c, [d.held_cps[str(j)] for j in range(k - PER_DOUBLING, k + 1) if str(j) in d.held_cps]


def check(d: OscillationDetector, f: Features, i: int) -> tuple[str, dict[str, Any], str] | None:
    if not d.held_fresh:
        return None
    pts = _points(d)
    if pts is None:
        return None
    # the noise unit: the noise at ``c``, while the loss stood still (see the module docstring)
    (t_b, s_b, _, peak_b, nl_b, _), (t_c, s_c, lr_c, peak_c, _, sd), since = pts
    t, s_t, lr_t = since[-1][0], since[-1][1], since[-1][2]
    if not nl_b >= d.min_loss_records or not lr_t > 0.0 or not lr_c > 0.0:
        return None
    if d.last_closed >= s_b:
        return None  # an episode (a relapse, a zig-zag) already told the run during these doublings
    if not peak_c <= peak_b * 1.001 or not lr_t <= d.anneal * lr_c:
        return None  # the LR rose during the held doubling (a warm-up), or has not come down
    held, fell = t_b - t_c, t_c - t
    if not held < d.stall_z * sd or not fell >= d.fall_z * sd:
        return None
    if not logged_from_start(int(f.l0_step[i]), int(s_t), int(f.nl[i])):
        return None  # an excerpt: the progress made before it, and so the share, is unknown
    made = f.l0[i] - t_c
    if not made > 0.0 or fell < d.held_share * made:
        return None
    if any(p[0] - q[0] < d.steady * fell for p, q in zip(since, since[1:])):
        return None  # one drop (a step decay, an epoch boundary), not a fall that follows the LR down
    ev: dict[str, Any] = {"held_from_step": int(s_b), "held_to_step": int(s_c), "level_held": t_c,
                          "level_before": t_b, "lr_held": lr_c, "level": t, "lr": lr_t,
                          "fell_share": fell / made, "first_loss": f.l0[i]}
    return (f"LR too high: the loss made no progress from step {int(s_b)} to {int(s_c)} at LR "
            f"{fmt(lr_c)} ({fmt(t_b)} -> {fmt(t_c)}); since the schedule lowered the LR to "
            f"{fmt(lr_t)} it fell {fmt(t_c)} -> {fmt(t)} by step {int(s_t)}. The LR held the "
            f"descent back; the run is not lost"), ev, \
        (f"The loss stood still at LR {fmt(lr_c)} and descended once the LR came down: the peak "
         f"LR is too high for this run (its noise floor is where the loss stood).")


def resolved(d: OscillationDetector, f: Features, i: int) -> str | None:
    assert d.alert is not None  # called while an episode is open
    if f.nlr[i] > 0 and f.lrlast[i] >= d.alert.evidence["lr_held"]:
        return f"LR back up to {fmt(f.lrlast[i])}"
    if not d.held_fresh:
        return None
    pts = _points(d)
    if pts is None:
        return None
    t_c, t = pts[1][0], pts[2][-1][0]
    made = f.l0[i] - t_c
    if made > 0.0 and t_c - t < 0.5 * d.held_share * made:
        return f"the descent has settled (level {fmt(t)})"
    return None
