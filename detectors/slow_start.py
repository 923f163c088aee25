"""Slow start: a classifier or LM that starts at its chance level leaves it at a slow, steady pace."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import fmt
from .dead_rules.at_chance import CHANCE_K, chance_level
from .dead_rules.frozen import evaluation_moved
from .progress import FROM_START_GAPS, logged_from_start
from .raise_lr import RaiseLRDetector, schedule_explains

#: keys of the detector's own entries in ``cps`` (the others are record counts)
_OFF = "off"
#: key of the evaluations count in ``cps``: [last validation loss, evaluations that moved]
_EVALS = "evals"


def on_grid(n: int) -> bool:
    """Is ``n`` (a count of loss records, >= 3) a checkpoint: 3, or a power of two or 1.5 x one
    (4, 6, 8, 12, 16, 24, ...)? Half of every checkpoint from 8 on is a checkpoint too."""
    if n == 3:
        return True
    m = n // 3 if n % 3 == 0 else n
    return n >= 4 and m & (m - 1) == 0


def _grid_rows(nl: np.ndarray) -> np.ndarray:
    """The rows whose record count ``nl`` first reaches a checkpoint (:func:`on_grid`): ``nl`` never
    falls along a batch, so each checkpoint in its range is found by bisection (a few per batch,
    none in most: the checkpoints thin out as the run grows)."""
    rows = np.zeros(len(nl), dtype=bool)
    if len(nl) == 0:
        return rows
    lo, hi = int(nl[0]), int(nl[-1])
    grid = _checkpoints_between(lo, hi)
    if grid:
        at = np.searchsorted(nl, grid)
        at = at[at < len(nl)]
        rows[at] = True
    return rows


def _checkpoints_between(lo: int, hi: int) -> list[int]:
    """The checkpoints (:func:`on_grid`) from ``lo`` to ``hi``."""
    out = [3] if lo <= 3 <= hi else []
    p = 4
    while p <= hi:
        out += [n for n in (p, p + p // 2) if lo <= n <= hi]
        p *= 2
    return out


class SlowStartDetector(RaiseLRDetector):
    """A too-small LR on a log that starts at a chance level: the loss leaves ln(k) at a slow,
    steady pace, long after a working LR would have left it.

    An untrained classifier (or LM) predicts about the uniform distribution: its first loss is
    ln(k) for k classes (or the vocabulary). At a working LR it leaves that level fast (most of
    the first few hundred optimizer steps' progress is made early, and the descent then curves
    towards a floor); at an LR far too small it leaves at a slow pace that does not slow down,
    still close to ln(k) after hundreds of steps or many epochs. slow_progress sees that pace
    from step 256 on, with 256 records and a logged LR; short and sparse logs (an epoch log of
    20 lines, a course notebook's loss printed every 100 iterations) never get there. This rule
    reads the log as a whole, at record counts 8, 12, 16, 24, 32, ...:

    * the first loss ``L0`` (``features.l0``) is within ``band`` of a chance level ln(k)
      (:data:`.dead_rules.at_chance.CHANCE_CLASSES`), on a log that begins where training
      began (:func:`.progress.logged_from_start`);
    * the level now (the median of the last three losses, ``c``) is still within ``gain`` x
      ``L0`` below it, and the loss never rose above ``L0`` by ``band`` (the fast level's
      maximum, ``features.worst``: a run at 100x its LR that hovers at chance is noisy around
      it, not descending);
    * the descent is steady: with ``a`` the median of the first three losses and ``b`` the
      level at half the records, the fall per step from ``b`` to ``c`` over that from ``a`` to
      ``b`` lies in [``pace_low``, ``pace_high``]: a descent curving towards
      a floor slows below ``pace_low``, one that speeds up more than ``pace_high`` is a new
      phase (leaving an initial plateau, a warm-up nobody logged);
    * the fall ``a - c`` is real: >= ``z`` x the trend-free noise ``features.nsd``;
    * training time has passed: >= ``min_steps`` steps since the first loss, or an evaluation
      logged with every loss record (each record spans an evaluation interval, an epoch for
      most trainers; the first record, the mean over a whole epoch, at chance already says a
      whole epoch learned nothing);
    * if the LR is logged: not rising since the half-way checkpoint (a warm-up) nor decayed
      below ``decayed`` x its peak.

    **warning**, ``scale_lr`` x``factor``. Resolves once the LR was raised 2x or the level has
    left the band (below ``(1 - gain)`` x ``L0``); a log whose level left the band (or rose
    above ``L0``) is not judged again.

    Parameters
    ----------
    band : float, default 0.002
        Relative distance of the first loss from ln(k), the dead rules' ``chance_band``: that
        close, the first loss is the uniform prediction (an untrained head, or a first epoch
        that learned nothing; the tune part's two too-low logs start 0.003 % and 0.017 % from
        ln 10). A wider band lets a loss of another kind match a level by coincidence: a healthy
        segmentation fine-tune of the tune part with its loss +5 (bench/variants.py) started
        0.35 % from ln 1000 and was told to raise the LR at 0.005.
    gain : float, default 0.15
        The least share of ``L0`` a run with a working LR has gained by then. On the tune part of
        bench/real the two too-low logs that start at chance sit at 0.03 (20 epochs) and 0.11
        (800 iterations) when the rule fires; a healthy LLaMA classifier fine-tune that starts at
        ln 2 (its logged LR column dropped) has gained 0.22 at step 510, and was told to raise
        the LR at 0.25 (bench/variants.py-style variants, offline).
    pace_low, pace_high : float, default 0.5 and 2.0
        The second half's fall per step over the first's (a linear descent gives 1; an
        exponential one halves its pace every ``ln 2`` time constants).
    z : float, default 6.0
        Noise units (``features.nsd``) the level must have fallen: runs at 10-100x their LR on
        the benchmark that wander around chance fell 2-7 % "in level" on their noise alone.
    min_records : int, default 8
    min_steps : int, default 500
        Optimizer steps since the first loss (without an evaluation on every record). On the
        benchmark's seeds 0-7, healthy runs that start at chance leave it within tens of steps;
        measured offline with every other condition, 500 adds no alarm there (full cadence,
        every 10th and every 50th row).
    decayed : float, default 0.3
        slow_progress's: a decayed schedule's slow tail is by design.
    factor : float, default 3.0
        slow_progress's raise for a steady pace.

    Examples
    --------
    A classifier's epoch log (training and validation loss per epoch) that leaves ln 10 slowly:

    >>> from losswatch.detectors import Engine
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("r")
    >>> recs = [Record(e, 2.3024 - 0.011 * (e - 1), val_loss=2.30 - 0.011 * e) for e in range(1, 21)]
    >>> [(a.kind, a.detector, a.step, a.action.params) for r in recs for a in eng.update(r)]
    [('plateau', 'slow_start', 8, {'factor': 3.0})]

    References
    ----------
    CS231n, "Neural networks part 3" (babysitting the learning process: a loss that decays
    linearly from its initial value suggests a learning rate too low; the initial loss of a
    softmax classifier is ln(k)); Smith, "A disciplined approach to neural network
    hyper-parameters" (2018).
    """

    name = "slow_start"
    kind = "plateau"
    static_screen = False  # a run that did not start at chance, or left it, needs no row at all

    def __init__(self, band: float = 0.002, gain: float = 0.15, pace_low: float = 0.5, pace_high: float = 2.0,
                 z: float = 6.0, min_records: int = 8, min_steps: int = 500, decayed: float = 0.3,
                 factor: float = 3.0) -> None:
        super().__init__(band=band, gain=gain, pace_low=pace_low, pace_high=pace_high, z=z,
                         min_records=min_records, min_steps=min_steps, decayed=decayed, factor=factor)

    def screen(self, f):
        if _OFF in self.cps:
            return np.zeros(f.n, dtype=bool)
        return (f.a("lok") & _grid_rows(f.a("nl"))) | f.a("vok")

    def active_screen(self, f):
        # every loss row while warning: the level may leave the band (or rise above L0) at any record
        rows = super().active_screen(f)
        return rows if _OFF in self.cps else rows | f.a("lok")

    def _level(self, f, i: int) -> float:
        """The median of the last three losses (this record's and the two before)."""
        x, y, w = f.lprev[i], f.lp2[i], f.b_lp2[i]
        return sorted((x, y, w))[1]

    def _count_evaluation(self, v: float) -> None:
        """Count the evaluations that moved (:func:`.dead_rules.frozen.evaluation_moved`, the
        first one included): a logger that repeats the last validation loss on every line logs
        one evaluation, not one per line."""
        last, moved = self.cps.get(_EVALS, (math.nan, 0.0))
        if last != last or evaluation_moved(v, last):
            moved += 1.0
        self.cps[_EVALS] = [v, moved]

    def step(self, f, i: int) -> None:
        if self.alert is not None:
            self.resolve_if_raised(f, i)
        if _OFF in self.cps:
            return
        if f.vok[i]:
            self._count_evaluation(f.val[i])
        if not f.lok[i]:
            return
        n = int(f.nl[i])
        if self.alert is None and (n < 3 or not on_grid(n)):
            return
        l0 = f.l0[i]
        lv = chance_level(l0, self.band) if l0 == l0 and l0 > 0.0 else None
        if lv is None or f.worst[i] > l0 * (1.0 + self.band):
            if self.alert is not None:
                self.close_episode(f.step[i], f"the loss rose above its first loss ({fmt(f.worst[i])})")
            self._stop()
            return  # not a start at chance, or the loss rose above it: nothing this rule can say
        level = self._level(f, i)
        gained = (l0 - level) / l0
        if gained >= self.gain:
            if self.alert is not None:
                self.close_episode(f.step[i], f"the loss has left the chance level ({fmt(level)})")
            self._stop()
            return
        if self.alert is not None and (n < 3 or not on_grid(n)):
            return  # between checkpoints only the resolutions above are checked
        peak = f.peak[i] if f.nlr[i] > 0 else math.nan
        self.cps[str(n)] = [level, peak, float(f.step[i])]
        for key in [k for k in self.cps if k not in ("3", _EVALS) and int(k) < n // 2]:
            del self.cps[key]
        if self.alert is not None or n < self.min_records:
            return
        half, first = self.cps.get(str(n // 2)), self.cps.get("3")
        if half is None or first is None:
            return
        (a, _, s_a), (b, _, s_b) = first, half
        step = int(f.step[i])
        if not s_a < s_b < step:
            return
        # the fall per step in each half (a sparse or irregular log spaces its records unevenly)
        fell_first, fell_second = (a - b) / (s_b - s_a), (b - level) / (step - s_b)
        if not (fell_first > 0.0 and self.pace_low * fell_first <= fell_second <= self.pace_high * fell_first):
            return  # not a steady pace: curving towards a floor, or a new phase speeding up
        if not (a - level >= self.z * f.nsd[i]):
            return  # a fall within the noise (or no noise estimate yet)
        if f.nv[i] > 0 and not (f.vlast[i] < f.v0[i] and evaluation_moved(f.vlast[i], f.v0[i])):
            return  # the held-out loss has not fallen: a small LR lowers it too
        epochs = self.cps.get(_EVALS, (math.nan, 0.0))[1] >= n - 1  # an evaluation that moved per record
        if step - f.l0_step[i] < self.min_steps and not epochs:
            return
        if not logged_from_start(int(f.l0_step[i]), step, n, FROM_START_GAPS):
            return  # an excerpt: its first loss is not the untrained model's
        lr = f.lr[i] if f.lrok[i] else None
        if schedule_explains(lr, peak, half[1], self.decayed):
            return  # a warm-up still rising since the half-way checkpoint, or a decayed tail
        k = CHANCE_K[lv]
        ev: dict[str, Any] = {"first_loss": l0, "chance_k": k, "level": level, "gained": gained,
                              "pace": fell_second / fell_first, "records": n, "epochs": bool(epochs)}
        self.advise_raise(step, f"slow start: the loss began at the chance level ln({k}) = {lv:.4f} and after "
                          f"{n} records ({'one evaluation each' if epochs else f'{step - int(f.l0_step[i])} steps'}) "
                          f"is at {fmt(level)}, {fmt(100 * gained)}% below it, still falling at a steady "
                          f"pace: the LR is limiting training", ev, lr,
                          "The loss is leaving its untrained level slowly and almost linearly: the steps are too small.")

    def _stop(self) -> None:
        """Not judged again: keep only the marker (O(1) state for the rest of the run)."""
        self.cps = {_OFF: [1.0]}
