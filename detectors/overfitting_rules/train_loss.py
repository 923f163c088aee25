"""A log without a training loss: the evaluations alone tell.

Condition: no finite training loss has been logged up to the evaluation (``features.nl`` is 0):
a log of evaluations only (a Keras history or an evaluation callback that writes only the
validation loss, a dashboard export of the validation curve). The rules that read the training
loss at the evaluations (:mod:`.steady_rise`, :mod:`.drift`) then judge the validation loss on
its own: a validation loss that fell and then rises on every evaluation since its best (or
trends up far outside its noise) is the memorisation curve whether or not the training loss was
written down; a training loss that is logged is still required to fall. The run of rises is
then one longer (:mod:`.steady_rise`'s ``rises``): the order of the evaluations is all the
evidence. :mod:`.held_above`
keeps its training-loss guard (its smoothed level, unlike a run of rises, is what a wandering
validation loss of a converged model also shows). A validation loss that blows up is still
left to the divergence rules (``max_ratio``).

No parameter.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.overfitting import OverfittingDetector
>>> from losswatch.detectors.types import Record
>>> val = [0.57, 0.49, 0.51, 0.56, 0.64, 0.77]
>>> alerts = drive(OverfittingDetector(), [Record(e, None, val_loss=v) for e, v in zip(range(1, 7), val)])
>>> [(a.step, a.evidence["rule"], a.action.params) for a in alerts]
[(6, 'steady_rise', {'to_step': 2})]
>>> print(alerts[0].message)  # doctest: +NORMALIZE_WHITESPACE
overfitting: val_loss rose on each of the last 4 evaluations since its best (0.49 at step 2):
    0.49 -> ... -> 0.56 -> 0.64 -> 0.77 (no training loss logged)

References
----------
Keras EarlyStopping(monitor="val_loss"): early stopping reads the validation loss alone;
Prechelt, "Early stopping - but when?" (1998): the UP_s criterion on the validation error.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..base import fmt

if TYPE_CHECKING:
    from ..features import Features
    from ..overfitting import OverfittingDetector


def no_train(f: Features, i: int) -> bool:
    """Has the log written no training loss up to row ``i``?"""
    return f.nl[i] == 0


#: Records from one evaluation to the next from which the training loss at an evaluation is read
#: as its level: the memory of ``features.slow`` (alpha_slow 0.1, ~10 records). Set by: a
#: trainer_state log thinned to every 5th or 10th row (3-5 records between evaluations, each a
#: logging interval's mean loss) lost its steady_rise at 2 (tune variants, overfitting).
DENSE_GAP = 10


def train_at(d: OverfittingDetector, f: Features, i: int) -> float:
    """The training loss at the evaluation on row ``i``, as :mod:`.steady_rise` and :mod:`.drift`
    compare it: in a dense log (at least :data:`DENSE_GAP` records since the evaluation before)
    its level (``features.slow``, ~10 records): there one record is one minibatch's draw, and the
    level is the stretch's own; otherwise (an epoch log, a trainer's lines, each already a mean
    over its interval, a few of them per evaluation) the one logged with it, or the last before
    it: a ~10-record level would carry earlier evaluations' records into this one's reading."""
    return f.slow[i] if d.eval_gap >= DENSE_GAP else f.lprev[i]


#: How far the training loss read from a few lines (an epoch log: :func:`train_at`'s line, or
#: :mod:`.held_above`'s level) must have fallen since the best, in units of its noise since that
#: best (:func:`noise`, about 0.8 of the noise's standard deviation). Set by: the difference of
#: two lines of a flat loss has a standard deviation of about 1.7 of these units, so 3 is a fall
#: about 1.7 standard deviations out of the noise for :mod:`.drift`'s two single lines, and about
#: 3 for :mod:`.held_above`'s two ``fast`` levels (an EMA with a one-record half-life, whose
#: noise is about 0.6 of a line's). On the tune part of the corpus the epoch logs caught for
#: overfitting had fallen far more than their noise at the alert, the healthy ones alerted before
#: had -3 to 2.5x (a converged run whose training loss wanders as much as its validation loss).
TRAIN_NOISE = 3.0

#: A second difference of white noise of standard deviation s has a mean absolute value of
#: about 1.95 s; divided by sqrt(6) it reads as ~0.8 s, the scale of ``features.nsd``.
_D2_SCALE = 1.0 / math.sqrt(6.0)


def print_quantum(x: float) -> float:
    """The last decimal place ``x`` is written to (0.0011 -> 1e-4), down to 1e-12 (0.0 beyond:
    a full-precision float has no print resolution worth a floor)."""
    if not math.isfinite(x):
        return math.inf
    q = 1.0
    while q >= 1e-12:
        if abs(x - round(x / q) * q) <= 1e-9 * q:
            return q
        q *= 0.1
    return 0.0


#: The evaluations up to :mod:`.held_above`'s best whose training level (``features.fast``)
#: stands for the level at the best: the lowest of them. The level at the best is one noisy
#: reading: drawn high at the best of a plateau, it then "falls" by the plateau's noise while a
#: quiet stretch after the best measures little noise; a descending loss's lowest is its last
#: (the one at the best), so a memorising run loses nothing. Set by: a 100-epoch Keras history
#: (healthy) whose training lines wander 0.02-0.07 up to its best at epoch 43 (a line of 0.038
#: there, 0.026 two epochs before) and 0.02-0.027 after it read a fall of 7x its noise since the
#: best at epoch 52; four readings span the plateau's swings of a line or two.
BEST_LOW = 4


#: The second differences before :mod:`.held_above`'s best that count in :func:`noise` with
#: those since it. Set by: the same Keras history's lines wander 0.02-0.07 before its best and
#: 0.02-0.027 after: the noise of the reading at the best is the plateau's, not the quiet
#: stretch's that follows (7x that stretch's noise at epoch 52 was a fall of 0.029 -> 0.023).
NOISE_BEFORE = 4


def observe_noise(d: OverfittingDetector, f: Features, i: int, new_best: bool) -> None:
    """Keep the noise of the training lines read at the evaluations around :mod:`.held_above`'s
    best: twice the mean of the downward bends (the negative second differences) of the lines
    since it and of the last :data:`NOISE_BEFORE` before it. Noise bends a line both ways
    equally; a decelerating descent (the first epochs') and a steady fall (memorisation) bend
    it upward or not at all, so neither enters. A line read again by the next evaluation (a log
    that writes its training loss less often than it evaluates) is not a new reading. Also the
    finest decimal the lines are written to (the log's print resolution), and the lowest of the
    last :data:`BEST_LOW` training levels as the level at a new best."""
    x, lv = f.lprev[i], f.fast[i]
    if not math.isfinite(x):
        return
    d.tlow = (d.tlow + [lv])[-BEST_LOW:]
    q = print_quantum(x)
    if q < d.tq:
        d.tq = q
    if x == d.tl1 and not new_best:
        return  # the same line read again (a log that writes the training loss less often)
    if d.tl1 == d.tl1 and d.tl2 == d.tl2:
        e = 2.0 * d.tl1 - x - d.tl2
        e = e + e if e > 0.0 else 0.0
        d.tsum += e
        d.tn += 1
        d.tpre = (d.tpre + [e])[-NOISE_BEFORE:]
    d.tl2, d.tl1 = d.tl1, x
    if new_best:
        d.train_at_best = min(d.tlow)
        d.tsum, d.tn = float(sum(d.tpre)), len(d.tpre)


def noise(d: OverfittingDetector) -> float:
    """The training lines' noise since the best (NaN before two second differences), floored
    at the log's print resolution: a loss printed to 4 decimals that sat constant for 20 epochs
    has no measured noise, and its next rounding step is not a fall."""
    if d.tn < 2:
        return math.nan
    n = d.tsum / d.tn * _D2_SCALE
    return n if n > d.tq else d.tq


def fell_past_noise(d: OverfittingDetector, at_best: float, now: float) -> bool:
    """Did the training loss fall from ``at_best`` to ``now`` by more than :data:`TRAIN_NOISE`
    times its noise since the best? (False where the noise is unknown: NaN.)"""
    return at_best - now > TRAIN_NOISE * noise(d)


def advice_words(f: Features, i: int) -> str:
    """What the advice may say the model does: every rule that saw a training loss saw it fall
    (memorisation); a log without one shows only that the model generalises worse than at its best
    (a shifted validation set or a drifting evaluation look the same from the evaluations alone)."""
    if no_train(f, i):
        return (": the model generalises worse than at its best (no training loss logged, so "
                "memorisation cannot be told from a change in the validation data)")
    return " while training loss keeps falling: the model is memorising"


def train_words(f: Features, i: int, at_best: float, now: float) -> str:
    """How the alert's message ends: what the training loss did (or that the log has none)."""
    if no_train(f, i):
        return " (no training loss logged)"
    return f", while the training loss fell {fmt(at_best)} -> {fmt(now)}"
