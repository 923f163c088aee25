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
    * if a validation loss is logged, its last value is below its first (to four significant
      digits): a too-small LR lowers the held-out loss too, slowly; a training loss that falls
      while the held-out loss does not is memorisation or a logger's repeat, not a small LR;
    * training time has passed: >= ``min_steps`` steps since the first loss, or an evaluation
      that moved (:func:`.dead_rules.frozen.evaluation_moved`) logged with every loss record
      (each record spans an evaluation interval, an epoch for most trainers; the first record,
      the mean over a whole epoch, at chance already says a whole epoch learned nothing). A
      logger that repeats the last validation loss on every line logs one evaluation, not one
      per record: its 8 records may be 8 optimizer steps;
    * if the LR is logged, the schedule does not explain the pace
      (:func:`.raise_lr.schedule_explains`): not rising since the half-way checkpoint (a
      warm-up) nor decayed below ``decayed`` x its peak.

    **warning**, ``scale_lr`` x``factor``. While it is open every loss record is checked: it
    resolves once the LR was raised 2x, the level has left the band (below ``(1 - gain)`` x
    ``L0``) or the loss rose above ``L0`` by ``band`` (an LR raised without being logged
    shakes the loss first); a log whose level left the band (or rose above ``L0``) is not
    judged again.

    Parameters
    ----------
    band : float, default 0.002
        Relative distance of the first loss from ln(k), the dead rules' ``chance_band``: an
        untrained softmax head's output is the uniform prediction up to its initialisation's
        small logits, so its first loss is ln(k) to a few parts in a thousand (the tune part's
        two too-low logs start 0.003 % and 0.017 % from ln 10). A wider band lets a loss of
        another kind match a level by coincidence: a healthy segmentation fine-tune's loss + 5
        starts 0.35 % from ln 1000 and falls slowly (tests/test_detector_slow_start.py).
    gain : float, default 0.15
        The least share of ``L0`` a run with a working LR has gained by the time the rule may
        speak (``min_steps``, or 8 evaluations): within a decade of a good LR (an LR range
        test's steep part) a classifier leaves the uniform prediction within its first few
        hundred steps or epochs, and its fall curves towards a floor. The tune part's two
        too-low logs sit at 0.064 (20 epochs, an alert at epoch 16) and 0.11 (800 iterations)
        when the rule fires; the healthy classifier and LM logs that start at ln 2 and ln 3 in
        the tests stay quiet with and without their LR column. One bar for every k: in nats it
        is ``gain`` x ln(k), 0.10 for a binary task, where a hard (noisy-label) task may
        healthily gain less. No k-dependent bar is set: the tune part has no too-low log at
        k = 2 to set one, and such a task is kept quiet by the other conditions, not the bar (its
        healthy descent curves towards a floor: pace below ``pace_low``).
    pace_low, pace_high : float, default 0.5 and 2.0
        The second half's fall per step over the first's. A linear descent (the too-small LR's)
        gives 1; an exponential one with time constant tau judged at time ``T`` gives
        exp(-T / (2 tau)), below 0.5 from ``T`` = 1.4 tau on: a healthy descent judged later
        than 1.4 of its time constants is excluded. 2.0 is the same factor the other way: a
        fall that more than doubles its pace is a new phase. The tune part's too-low logs have
        1.70 (the epoch log) and 1.14 (the iteration log) at the alert.
    z : float, default 6.0
        Noise units (``features.nsd``) the level must have fallen: runs at 10-100x their LR on
        the benchmark that wander around chance fell 2-7 % "in level" on their noise alone.
    min_records : int, default 8
        The first checkpoint whose half-way checkpoint (record 4) lies past the first three
        records (whose median is ``a``): at 6 the half-way point is record 3, and the two
        halves cannot be compared.
    min_steps : int, default 500
        Optimizer steps since the first loss (without an evaluation that moved on every
        record): a working LR leaves the uniform prediction within tens to a few hundred steps,
        so 500 steps at chance is training time, not a run's first steps (the first 40 steps of
        any run can look like a slow start, tests/test_detector_slow_start.py).
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
                self.close_episode(f.step[i], f"the loss rose above its first loss ({fmt(f.worst[i])})" if lv is not None
                                   else f"its start level {fmt(l0)} is no chance level")
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
