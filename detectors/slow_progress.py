"""Slow progress: the loss is still falling at a steady pace, so the LR is what limits it."""

from __future__ import annotations

import math
from typing import Any

from .base import fmt
from .doublings import checkpoint_index, checkpoint_rows
from .lost import blew_up
from .progress import FROM_START_GAPS, climbed_back, logged_from_start
from .raise_lr import RaiseLRDetector, schedule_explains


class SlowProgressDetector(RaiseLRDetector):
    """A too-small LR, seen from one run: the loss keeps falling at an almost constant pace
    instead of dropping fast and then flattening.

    Checked ``per_doubling`` times per doubling of the step (at the first record at or after each
    ``2 ** (j / per_doubling)``), so with O(1) memory (at most 64 x ``per_doubling`` checkpoints):
    with ``T(s)`` the loss level (``features.slow``, ~10-record memory: the 50-record trend lags
    too much this early) at step ``s`` and ``L0`` the first loss, at step ``t`` against the
    checkpoint ``c`` one doubling earlier::

        h = (T(c) - T(t)) / (L0 - T(c))   # progress in the last doubling / progress before it

    A healthy run made most of its progress early: ``h`` is small (0.01-0.05 on the benchmark's
    healthy runs; a power-law LM curve gives ~0.3/sqrt(c)). An exponential descent with time
    constant tau gives exactly ``h = exp(-c / tau)``: a run still within ~1.5 tau of its start
    at step 256 is flagged (its LR x10 sibling would be there 10x sooner). On the benchmark
    (one checkpoint per doubling) ``ratio`` 0.25 gave F1 0.81 for "LR too low" with no false
    alarm; 0.35 and 0.5 lost recall (0.74, 0.70) and removed none. A run whose LR is far too
    small descends almost linearly: ``h`` is ~1 (the second half of the time makes as much
    progress as the first). Two doublings say more than one: a healthy descent slows down, so
    its ``h`` falls from one doubling to the next, while one that the LR limits keeps its pace
    after its first fast drop, so its ``h`` grows; such a held pace is flagged from ``h >=
    sustained``. **warning** with
    ``scale_lr`` x``factor`` when ``h >= ratio`` (or the pace was held), ``t >= min_step``, the recent progress is
    real (>= ``z`` noise units of the loss), the checkpoint's level was not above the best level
    reached before it (by ``z`` noise units: a fall from a relapse is a recovery, not the LR's
    pace; softmax at 10x LR relapses during its warm-up and falls fast after it), nor above the
    raw best reached before it by ``given_back`` of the progress and ``climb_z`` noise units
    (``progress.climbed_back``, the plateau's test: the level lags a short dip, the raw best
    does not), the fall was spread over the doubling (each sub-window between its checkpoints made
    ``steady`` of it or more, none of the grid twice as fine more than ``drop`` of it and no
    two adjacent ones more than ``drop_pair``: a
    multi-epoch fine-tune drops in a step at each epoch boundary, which is memorisation, not a
    pace), the fall per step did not speed up while the LR was cut
    (``anneal``: a descent that a smaller LR makes faster is the annealing of a large LR, not
    the pace of a small one) and the LR was
    steady (not warming up since ``c``, not decayed below ``decayed`` x its peak: a slow tail of
    a decayed schedule is by design). So the LR must be logged, by the checkpoint and one
    doubling before (on any row: the last LR logged is read, as a logger that prints its LR on
    other rows than its losses does): without it a warm-up, a decay and an annealing all pass unseen (healthy
    GPT-2 speedruns without their LR column were told "raise the LR x3" at steps 512-725, still
    in a warm-up of 700 steps, and a DPO fine-tune at step 2,900, its LR decayed to 1 %;
    bench/variants.py), except for a fall that stays near-linear over two doublings
    (``unlogged``), which none of them makes. A log that begins after training began (an
    excerpt, a resumed run: ``progress.logged_from_start``) is not judged, whatever its LR does:
    its first loss is no start, so ``h`` against it says nothing (a healthy GPT-2 124M log cut to
    its last 80 %, its LR decaying, had ``h`` 2.5 and was told to raise the LR; a healthy
    exponential descent with a power-law tail at a constant LR, cut to its last 90, 80 or 70 %,
    was told "raise the LR x3" too). The doublings are in steps (training time is what the pace
    is about), but the run must also have ``min_records`` loss records: a log thinned to every
    10th row, or one whose step column counts 7 per record, reaches step 256 while its loss is
    still in its steep first phase by the run's own clock (on the benchmark's healthy runs, 26
    such logs out of 76 were told to raise the LR; none at full cadence). A sparser log, with
    ``sparse_records`` to ``min_records`` records, is judged only at a logged LR never lowered
    and only when its fall is near-linear over two doublings, both ways (the test of
    ``unlogged``).
    Resolves at the next checkpoint where ``h < ratio / 2`` or once the LR has been raised 2x
    (without a logged LR: once the loss falls 2x as fast per step as at the alert, the LR's
    raise seen in the loss; ``raise_lr.RAISED``).

    Parameters
    ----------
    ratio : float, default 0.22
        Set by (half-doubling checkpoints, through bench/score.py): the healthy runs of the
        benchmark's seeds 0-7 reach h 0.19 at most (rnn SGD warm-up-cosine x10); 0.18 adds two
        false alarms there, 0.2 none but sits 5 % above them; 0.22 keeps 15 % and finds LR too
        low on 0.81 / 0.76 / 0.76 / 0.76 of the runs of seeds 0-1 / 2-3 / 4-5 / 6-7 (0.25: 0.80 /
        0.71 / 0.74 / 0.76). An exponential descent is flagged while within ln(1 / ratio) = 1.5
        time constants of its start.
    per_doubling : int, default 2
        Checkpoints per doubling of the step. With 1 (steps 256, 512, 1024, ...) a run of 600-800
        steps is judged at 256 and 512 only, and a one-cycle run whose LR was still rising at 256
        and had decayed by 512 never; 2 adds 362, 724, ... Measured on the benchmark's seeds 0-1
        and held-out seeds 2-7 (bench/results/detector-changelog.md).
    min_step : int, default 256
    min_records : int, default 256
    z : float, default 2.0
    decayed : float, default 0.3
    factor : float, default 3.0
    blowup : float, default 1.5
        Silent once the loss level (``features.worst``, the fast EMA's maximum) has been at or above
        this x the first loss: the run blew up, and the steady fall after it is a recovery (its LR
        is too high, if anything). 1.5x is the benchmark labels' "lost: above 1.5x the start".
        The same test as the lost-run rule's (``lost.blew_up``, against ``abs(first loss)``).
    given_back, climb_z : float, default 0.5 and 4.0
        The checkpoint's level had given back this share of the progress made down to the raw
        best before it, and sat this many noise units above it: the fall since is the recovery
        from a relapse. Without it, cnn SGD at 10x LR (warm-up into cosine) got "raise the LR"
        at step 363, once the relapse that took it from 1.1 back to 2.1 had ended (its level
        never went below 1.7, so the level's best missed the dip). The plateau's defaults.
    steady : float, default 0.2
        The least share of the doubling's fall each sub-window between its checkpoints must
        make (with ``per_doubling`` 2 a steady pace gives the two 41 % and 59 %, an exponential
        one at h >= 0.25 no less than ~35 %). A 3-epoch Alpaca fine-tune
        (bench/real/histories/yc1999__stanford_alpaca__output-trainer-state.csv, healthy) fell
        1.09 -> 0.72 between steps 256 and 512, 92 % of it in the step at its epoch boundary
        (406), and was told to raise the LR x3. On the benchmark and seeds 2-7 no detection is
        lost; two cyclic-LR runs at LR/10 are found at 363 instead of 256.
    drop : float, default 0.6
        The most of the doubling's fall one sub-window of the grid twice as fine (checkpoints
        at ``2 ** (j / (2 x per_doubling))``, kept in :attr:`halves`) may make: more is a drop
        that the level's lag (~10-20 records) spread over both of the doubling's own
        sub-windows, when the drop lands near the checkpoint between them. Where the checkpoints
        fall on the run's records depends on what its step counts: the same Alpaca fine-tune
        with its step column x10 has a checkpoint at record 410, four records after the drop at
        its epoch boundary; the level then fell 28 % and 72 % in the two halves, and the run was
        told to raise the LR x3; in the grid twice as fine, 70 % of the fall is one window.
        An exponential descent with ``h`` >= ``ratio`` makes at most ~32 % in one (a linear
        pace ~32 %); the benchmark's detections 52 % at most (seeds 0-1 and 2-7: no detection
        lost).
    drop_pair : float, default 0.85
        The most of the doubling's fall two adjacent windows of the grid twice as fine may make
        (tried where the doubling has all four): more is a drop that the level's lag spread over
        two of them, when it lands near the checkpoint between them (where ``drop`` sees none
        above 0.6). The same Alpaca fine-tune with its step column x7, x14 or x28 has its drop
        at the doubling's middle checkpoint: 54 % and 40 % in the two windows around it, 94 %
        together, and was told to raise the LR x3. A linear pace makes at most 59 % in two
        adjacent windows (the last two: 2^(-1/2) of the doubling's steps), an exponential
        descent less.
    anneal : float, default 0.6
        Silent when the LR at the checkpoint is below this x the LR one doubling earlier and the
        loss fell ``speed_up`` x faster per step in the last sub-window of the doubling than in the
        first: the descent sped up as the LR came down. A too-small LR's descent slows when the LR is cut (the steps get
        smaller still); one that speeds up was held back by an LR too large for the loss to
        settle (the noise floor of SGD and Adam scales with the LR), and raising it is the wrong
        advice. A CS336 LM at peak LR 3e-2 (tune part, labelled LR too high: stuck at 3.7-4.0
        while the LR sits at its peak) fell 3.79 -> 2.94 between steps 1450 and 2900 while its
        cosine decay took the LR 0.026 -> 0.012 (x0.48), and was told "raise the LR x3".
        Set by (bench/score.py, seeds 0-1, and held-out seeds 2-7): 0.8 loses an LR-too-low
        CNN (SGD, warm-up into cosine, LR/10, found at step 256) when no optimizer metadata is
        sent, its fall speeding up while its cosine decay passed x0.8; 0.6 and 0.5 lose nothing
        there, and 0.6 keeps the CS336 run's x0.48 away from the edge. With metadata no
        detection moves at 0.5-0.8; without it 0.6 loses one run on seeds 4-5 (a too-low run
        whose fall sped up as its schedule decayed: the guard cannot tell that from annealing).
    speed_up : float, default 1.1
        How much faster per step the last sub-window must fall for ``anneal``: a steady (linear)
        fall gives 1.0 and must not pass on rounding; the CS336 run above gives 1.25.
    sustained : float, default 0.17
        The ``h`` from which a pace held over two doublings is flagged (:meth:`pace_held`):
        ``h`` at least the share of the doubling before it (against the progress made before
        that one) and the fall per step no faster than in it (a fall that speeds up is a new
        phase starting, not a pace: the benchmark's healthy GPT Adam and RNN SGD runs at 10x LR
        drop again after step 256, h up to 0.18), both doublings past the first ``min_step / 2``
        steps and ``min_records / 2`` records, so judged from step 2 x ``min_step`` (a healthy
        GPT-2 speedrun log without its LR column, bench/real's public/mng-soap-124m.csv, fell from
        step 128 to 256 at the pace of 64-128, h 0.19: still its steep first phase, maybe a
        warm-up nobody logged; with its step column x7 the same records sit at steps 900-1800, so
        records count too, as for ``min_records``). Power-law and exponential descents never
        hold their pace. Set by (bench/score.py, seeds 0-1, held-out seeds 2-7): the RNN Adam
        runs at LR/10 hold a pace of h 0.17-0.21 after their first drop (none of the six reached
        0.22) and are found at steps 512-725; healthy and LR-too-high runs that hold their pace
        reach h 0.152 at most (RNN SGD, cyclic LR; MLP SGD at 10x LR). 0.16 also finds a cyclic
        RNN SGD run at LR/10, 5 % above them; 0.18 loses two of the six.
    unlogged : float, default 0.5
        Without a logged LR (none on any row so far) the run is judged only when the fall stays
        near-linear over two doublings, both ways (:meth:`linear_without_lr`): ``h``, the share
        of the doubling before it (against the progress made before that one) and the ratio of
        the two doublings' falls per step all between this and its inverse, that doubling past
        the first ``min_step / 2`` steps and ``min_records / 2`` records, the fall not sped up
        within the doubling (``speed_up``), on a log that begins where training began (as every
        log judged: an excerpt's ``h`` reaches 2-12 on the tune part's healthy logs cut to their
        last 70-80 %). A linear fall gives 1 for all three; an exponential one ``h``
        ``exp(-c / tau)``, >= 0.5 only within 0.69 time constants of its start; a warm-up nobody
        logged speeds the fall up, a decay nobody logged slows it. The upper bounds matter at the
        end of a warm-up: a run slow during its warm-up and fast after it, slowing when judged
        (``2 + 3 exp(-Phi / tau)``, ``Phi`` the LR's integral, warm-ups of 300-2,000 steps,
        ``tau`` 50-400) made 1.9-3.0x the progress before it in the doubling before (the share
        bound silences them; the pace ratio, 0.3-1.2 there, catches a fall slowing by more than
        half), and was told "raise the LR x3" at steps 512-1,449 in 14 of 16 such runs with lower bounds
        alone, none with both. A resumed run whose step counter restarts from 0 looks like a
        log from the start (``progress.logged_from_start`` sees nothing before it): the healthy
        exponential descent with a power-law tail above, resumed after 3,000 steps and renumbered
        from 0, without an LR, falls at ``h`` 0.54, 1.07 and 0.52x its pace per step, and is told
        "raise the LR x3" at step 5,793. Set on the tune part of bench/real (offline, every healthy log
        and its variants without an LR): the highest pair there is 0.37 / 0.75 (a DPO fine-tune
        whose decayed LR column was dropped), every other <= 0.29 / 0.30; every problem log of
        another label and its variants <= 0.18 (the smaller of the two). An SGD language model
        at an LR ~100x below the best of its sweep
        (bench/real/histories/arshchawla21__mainrun__sweeps-1-optim-sgd-lr0.0003-mainrun-log.csv,
        no LR logged) falls 9.77 -> 9.40 in 512 steps at 0.93 / 1.1 and is found at step 512.
        The benchmark's runs all log their LR: none is judged by it.
    sparse_records : int, default 32
        A log with at least this many loss records but fewer than ``min_records`` (an epoch
        table, a log thinned to one row in 10, a sweep that logs every 10-50 steps) is judged,
        but only at a logged LR that was never lowered (at its peak so far: a decaying
        schedule's tail, or a warm-up's, is not judged) and only by the test of ``unlogged``
        (``h``, the share of the doubling before and the ratio of the two doublings' falls per
        step all within [``unlogged``, 1 / ``unlogged``], the doubling before with
        ``sparse_records`` / 2 records or more). The floor of ``min_records`` is there because
        the level (~10 records of memory) lags by a large part of a doubling in a sparse log,
        and that lag makes a steep first phase look slow by ``h`` alone; it does not make it
        near-linear both ways: a lagged exponential gives ``h`` > 2 while the lag spans the drop
        (the level at the checkpoint still near the first loss) and a share of the doubling
        before far below 0.5 once it has passed (constant-LR descents with time constants of
        30-300 steps, a loss every 10 steps: never judged). A fall that the LR limits is
        near-linear at any cadence: the tune part's LR-too-low runs at a constant LR 1e-4
        (vukrosic exp2 and exp3, found at step 256 at full cadence) thinned to one row in 10
        (104 records) fall at ``h`` 0.89-1.21, 1.63-1.89 and 0.72-0.92 and are found at steps
        520-731. Without a logged LR a sparse log is not judged: the tune part's healthy DPO
        fine-tune (LR 5e-7, decaying) without its LR column, thinned to one row in 2, 3 or 5,
        falls near-linearly by DPO's design (0.66-0.78 / 0.52-0.99 / 0.64-1.13) and was told
        to raise the LR; with its LR logged it is never at its peak when judged. The same log
        with its LR held constant is told to raise it at step 2,900 at full cadence (``h``
        0.37) already, and at 1,460-2,900 thinned: the sparse path gives a thinned log the
        verdict its full log gets, no other. 32 records put the doubling before at 16 or more,
        past the level's first records. Lowering ``min_records`` itself (to 64 or 32) without this
        test was measured (bench/results/detector-changelog.md): healthy DPO, T5 and CS336 logs
        were told to raise the LR.

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

    def __init__(self, ratio: float = 0.22, min_step: int = 256, z: float = 2.0,
                 decayed: float = 0.3, factor: float = 3.0, blowup: float = 1.5,
                 min_records: int = 256, per_doubling: int = 2, given_back: float = 0.5,
                 climb_z: float = 4.0, steady: float = 0.2, anneal: float = 0.6,
                 speed_up: float = 1.1, sustained: float = 0.17, drop: float = 0.6,
                 drop_pair: float = 0.85, unlogged: float = 0.5, sparse_records: int = 32) -> None:
        super().__init__(ratio=ratio, min_step=min_step, z=z, decayed=decayed, factor=factor, blowup=blowup,
                         min_records=min_records, per_doubling=per_doubling, given_back=given_back,
                         climb_z=climb_z, steady=steady, anneal=anneal, speed_up=speed_up,
                         sustained=sustained, drop=drop, drop_pair=drop_pair, unlogged=unlogged,
                         sparse_records=sparse_records)
        # cps: str(k) -> [trend, peak LR, step, best level, raw best, LR (NaN when not logged),
        # loss records] at the first record of checkpoint k (checkpoint_index)
        self.k_done = -1  # the checkpoint covers many rows (the active screen passes some): once each
        # halves: str(j) -> [step, level] at the first record of each checkpoint of the grid
        # twice as fine (2 x per_doubling per doubling; the last two doublings), for ``lumpy``
        self.halves: dict[str, list[float]] = {}
        self.h_done = -1

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "k_done": self.k_done, "per_doubling": self.per_doubling,
                "halves": self.halves, "h_done": self.h_done}

    def set_state(self, d: dict[str, Any]) -> None:
        if d.get("per_doubling", 1) != self.per_doubling:
            # checkpoints saved on another grid (states from before per_doubling read as 1): the
            # engine starts this detector afresh
            raise ValueError("slow_progress checkpoints on another grid")
        super().set_state(d)
        self.k_done = d["k_done"]
        # states saved before the halves were kept: the steadiness test has none for the
        # doublings already under way, and reads the checkpoints alone there; the finer grid
        # starts after the last of its checkpoints the last step may be in (2 k_done: the finer
        # index is 2 k - 1 or 2 k), so that no level from mid-window is filed as a checkpoint
        self.halves, self.h_done = d.get("halves", {}), d.get("h_done", 2 * self.k_done)
        if any(len(cp) != 7 for cp in self.cps.values()):
            # saved before checkpoints kept the best levels, the LR and the record count: the
            # engine starts this detector afresh
            raise ValueError("slow_progress checkpoints without the best levels, the LR or the record count")

    def _levels(self, k: int, t_c: float, trend: float) -> list[float]:
        """The levels at the checkpoints of the doubling that ends at checkpoint ``k``."""
        return [t_c] + [self.cps[str(j)][0] for j in range(k - self.per_doubling + 1, k)
                        if str(j) in self.cps] + [trend]

    def _fine_levels(self, k: int, t_c: float, trend: float, step: int) -> list[float]:
        """The levels at the checkpoints of the grid twice as fine (:attr:`halves`) inside the
        doubling that ends at checkpoint ``k`` (at ``step``), from its start ``t_c`` to
        ``trend`` (none kept, as in a state restored from before they were: the two ends)."""
        s_c = self.cps[str(k - self.per_doubling)][2]
        inside = sorted((v for v in self.halves.values() if s_c < v[0] < step), key=lambda v: v[0])
        return [t_c] + [v[1] for v in inside] + [trend]

    def lumpy(self, k: int, t_c: float, trend: float, step: int) -> bool:
        """Did the doubling that ends at checkpoint ``k`` (at ``step``) fall in a drop rather
        than at a pace: one of the sub-windows between its checkpoints made less than ``steady``
        of its progress (``t_c - trend``), one of the sub-windows of the grid twice as fine
        made more than ``drop`` of it, or two adjacent ones (all of them kept) more than
        ``drop_pair``?"""
        levels = self._levels(k, t_c, trend)
        made = t_c - trend
        if any(a - b < self.steady * made for a, b in zip(levels, levels[1:])):
            return True
        fine = self._fine_levels(k, t_c, trend, step)
        falls = [a - b for a, b in zip(fine, fine[1:])]
        if len(falls) > 1 and any(x > self.drop * made for x in falls):
            return True
        # with a window missing (a sparse log), two adjacent ones may span most of the doubling
        return len(falls) == 2 * self.per_doubling and \
            any(x + y > self.drop_pair * made for x, y in zip(falls, falls[1:]))

    def pace_held(self, k: int, h: float, l0: float, step: int) -> bool:
        """Has the doubling that ends at checkpoint ``k`` (at ``step``, with share ``h``) kept the
        pace of the doubling before it: ``h >= sustained``, ``h`` not below that doubling's own
        share, and the fall per step not faster than in it (a second phase that starts, such as
        an emergent drop, speeds the fall up; a pace the LR limits holds)?"""
        before = self.cps.get(str(k - 2 * self.per_doubling))
        start = self.cps.get(str(k - self.per_doubling))
        if h < self.sustained or before is None or start is None or \
                2 * before[2] < self.min_step or 2 * before[6] < self.min_records:
            # the doubling before must be past the first min_step / 2 steps and min_records / 2
            # records too: the steep first drop and the warm-up (logged or not) are no pace to hold
            return False
        (t_b, s_b), (t_c, s_c) = (before[0], before[2]), (start[0], start[2])
        made_b, fell_b, fell = l0 - t_b, t_b - t_c, t_c - self.cps[str(k)][0]
        if made_b <= 0.0 or fell_b <= 0.0 or h < fell_b / made_b:
            return False
        return fell * (s_c - s_b) <= fell_b * (step - s_c)

    def two_doublings(self, k: int, l0: float, trend: float, step: int, records: int) -> tuple[float, float] | None:
        """The doubling before the one that ends at checkpoint ``k`` (at ``step``, level ``trend``)
        against it: that doubling's share of the progress made before it, and the fall per step in
        the last doubling over the fall per step in that one (``None`` while that doubling is within
        the first ``min_step / 2`` steps or ``records / 2`` records, or made no progress)."""
        before, start = self.cps.get(str(k - 2 * self.per_doubling)), self.cps.get(str(k - self.per_doubling))
        if before is None or start is None or 2 * before[2] < self.min_step or 2 * before[6] < records:
            return None
        (t_b, s_b), (t_c, s_c) = (before[0], before[2]), (start[0], start[2])
        made_b, fell_b = l0 - t_b, t_b - t_c
        if made_b <= 0.0 or fell_b <= 0.0 or step <= s_c:
            return None
        return fell_b / made_b, ((t_c - trend) / (step - s_c)) / (fell_b / (s_c - s_b))

    def linear_without_lr(self, k: int, h: float, l0: float, step: int, f, i: int,
                          records: int) -> tuple[float, float] | None:
        """Without a logged LR, is the fall near-linear over the last two doublings, both ways:
        ``h``, the share of the doubling before (:meth:`two_doublings`, that doubling past its
        first ``records / 2`` records) and the ratio of their
        falls per step all between ``unlogged`` and ``1 / unlogged``, and the fall not sped up
        within the doubling that ends at checkpoint ``k``? Only a pace the LR limits looks like
        that: a warm-up nobody logged speeds the fall up as its LR rises (and, once it ends, the
        fall that was slow during it is fast after it: the share of the doubling before is large,
        the pace per step drops), a decay nobody logged slows it (``h`` falls from one doubling
        to the next), and a healthy descent's ``h`` is ``exp(-c / tau)`` (>= 0.5 only within
        0.69 time constants of its start), a power law's smaller still. The two figures of
        :meth:`two_doublings` if so (the alert quotes them), else None."""
        two = self.two_doublings(k, l0, f.slow[i], step, records)
        if two is None or not all(self.unlogged <= x <= 1.0 / self.unlogged for x in (h, *two)):
            return None
        return None if self.sped_up(k, self.cps[str(k - self.per_doubling)][0], f.slow[i], step) else two

    def sped_up(self, k: int, t_c: float, trend: float, step: int) -> bool:
        """Did the loss fall ``speed_up`` x faster per step in the last sub-window of the doubling that ends at
        checkpoint ``k`` (at ``step``) than in its first?"""
        js = [j for j in range(k - self.per_doubling, k) if str(j) in self.cps]
        if len(js) < 2:
            return False
        pts = [(self.cps[str(j)][2], self.cps[str(j)][0]) for j in js] + [(step, trend)]
        (s0, a0), (s1, a1) = pts[0], pts[1]
        (s2, a2), (s3, a3) = pts[-2], pts[-1]
        return (a2 - a3) * (s1 - s0) > self.speed_up * (a0 - a1) * (s3 - s2)

    def screen(self, f):
        # the grid twice as fine holds every checkpoint of the decisions' grid
        return checkpoint_rows(f.a("step"), 2 * self.per_doubling)

    def step(self, f, i: int) -> None:
        step = f.step[i]
        self.resolve_if_raised(f, i)
        j = checkpoint_index(step, 2 * self.per_doubling)
        if j > self.h_done:
            self.h_done = j
            if f.nl[i] > 0:
                self.halves[str(j)] = [step, f.slow[i]]
                for old in [key for key in self.halves if int(key) < j - 4 * self.per_doubling]:
                    del self.halves[old]
        k = checkpoint_index(step, self.per_doubling)
        if k <= self.k_done:
            return
        self.k_done = k
        if f.nl[i] == 0:
            return
        trend = f.slow[i]
        peak = f.peak[i]
        # the last LR logged (on this row or before): a log may print its LR on other rows than
        # its losses; unlogged only when none was ever seen
        lr = float(f.lrlast[i]) if f.nlr[i] > 0 else None
        self.cps[str(k)] = [trend, peak, step, f.best[i], f.rbest[i], math.nan if lr is None else lr, f.nl[i]]
        prev = self.cps.get(str(k - self.per_doubling))
        if prev is None or step < self.min_step or f.nl[i] < min(self.min_records, self.sparse_records):
            return
        sparse = f.nl[i] < self.min_records
        t_c, peak_c, _, best_c, rbest_c, lr_c, _ = prev
        l0 = f.l0[i]
        made = l0 - t_c
        recent = t_c - trend
        h = recent / made if made > 0.0 else 0.0
        pace = recent / (step - prev[2]) if step > prev[2] else 0.0
        if self.alert is not None:
            if h < 0.5 * self.ratio:
                self.close_episode(step, f"progress has slowed down normally (h={fmt(h)})")
            else:
                self.resolve_if_faster(step, pace)
            return
        if not logged_from_start(int(f.l0_step[i]), step, int(f.nl[i]), FROM_START_GAPS):
            return  # an excerpt or a resumed run: its first loss is no start, so h against it says nothing
        unlogged = lr is None
        if sparse:
            # a sparse log: the level's lag (~10 records) spans much of a doubling, so only a fall
            # that stays near-linear over two doublings, both ways, at a logged LR never lowered
            # is judged
            if lr is None or not lr >= peak:
                return
            linear = self.linear_without_lr(k, h, l0, step, f, i, self.sparse_records)
            if linear is None:
                return
        else:
            linear = self.linear_without_lr(k, h, l0, step, f, i, self.min_records) if unlogged else None
        if unlogged and linear is None:
            return  # no LR logged: a warm-up, a decay or an annealing would pass unseen
        if recent < self.z * f.sd[i]:
            return
        sustained = h < self.ratio and self.pace_held(k, h, l0, step)
        if h < self.ratio and not sustained:
            return
        if self.lumpy(k, t_c, trend, step):
            return  # a drop (an epoch boundary of a multi-epoch fine-tune), not a steady pace
        if lr is not None and lr < self.anneal * lr_c and self.sped_up(k, t_c, trend, step):
            return  # the fall sped up as the LR was cut: annealing a large LR, not a small LR's pace
        if self.recovering(t_c, best_c, f.sd[i]) or \
                climbed_back(t_c, rbest_c, l0, f.sd[i], self.given_back, self.climb_z):
            return  # the checkpoint sat above the best level: the fall since is a recovery
        if blew_up(f.worst[i], l0, self.blowup):
            return  # the loss blew up earlier: a steady fall now is the recovery, and the LR too high
        if schedule_explains(lr, peak, peak_c, self.decayed):
            return  # a warm-up still rising since the checkpoint, or a decayed schedule's slow tail
        ev = {"trend": trend, "trend_at_checkpoint": t_c, "checkpoint_step": int(prev[2]),
              "first_loss": l0, "h": h, "pace_held": sustained, "lr_logged": not unlogged}
        if linear is not None:
            share_b, per_step = linear
            ev.update(share_before=share_b, pace_ratio=per_step)
            held = (f", and the doubling before made {fmt(100 * share_b)}% of the progress before it, "
                    f"at {fmt(per_step)}x its fall per step"
                    f"{' (no LR logged)' if unlogged else f' ({int(f.nl[i])} records)'}")
            why = "The loss is still falling at an almost linear pace: the steps are too small."
        else:
            held = ", at the pace of the doubling before" if sustained else ""
            why = "The loss is still falling at a steady pace: the steps are too small."
        self.advise_raise(step, f"slow progress: the loss fell {fmt(t_c)} -> {fmt(trend)} since step "
                          f"{int(prev[2])}, {fmt(100 * h)}% of all the progress before it{held}: the LR "
                          f"is limiting training", ev, lr, why, pace=pace if unlogged else 0.0)
