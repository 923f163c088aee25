"""Evaluations at chance: the validation loss sits at ln(k) evaluation after evaluation without
new lows (the training loss there too, or far above it, or not read at all: three runs below):
the network predicts a uniform guess.

Condition, on an evaluation: ``chance_records`` evaluations in a row within ``val_chance_band``
of the same chance level ln(k) (:data:`~losswatch.detectors.dead_rules.at_chance.CHANCE_CLASSES`),
the training loss logged with each (or the last before it, when logged at all) within that band
of the same level, and no new low of the validation loss (beyond its fourth digit) in the last
half of them. An evaluation averages the whole validation set, so a network with a
near-constant output sits at ln(k) to about 1% on every one (a binary video classifier:
0.688-0.701, its validation accuracy exactly 0.5), while one that learns leaves the band
downwards.

Or, with no condition on the training loss: ``exact_chance_records`` separate evaluations in a
row (the run's first evaluation aside: it may be of the untrained model) at ln(k) itself, to four
significant digits (:func:`~losswatch.detectors.dead_rules.at_chance.is_exactly`), the logged LR (if
any) not ramping up. An evaluation averages a fixed validation set: at ln(k) to four or more
digits, evaluation after evaluation, the network outputs the uniform guess on every example,
whatever its training loss does (a 4-class reading-comprehension fine-tune: every evaluation
1.38629 while its per-50-step training loss wanders 1.38-1.42, outside the 1.5 % band the longer
run needs). "Separate": a record without an evaluation since the last one, a log of evaluations
only, or a value of its own (a logger that repeats the last evaluation repeats its float). No
healthy log of the tune part nor healthy benchmark run (seeds 0-7) has two such evaluations in a
row.

Or, the evaluations no better than chance: ``exact_chance_records`` separate evaluations in a
row (the run's first aside), each at or above ln(k), as every evaluation before them was (or
ln(k) itself as far as its four significant digits tell,
:func:`~losswatch.detectors.dead_rules.at_chance.is_exactly`: 0.6931 is ln 2 printed), and
within ``chance_band`` (:mod:`.at_chance`, 0.2 %) of it, the training loss logged with each (if
any) no lower than ln(k) less that band and within ``val_chance_band`` above it, or at
:data:`FAR_ABOVE` (1.5) x ln(k) or more where the run's first evaluation was within
``val_chance_band`` of ln(k) (the evaluations never were anywhere but no better than chance, and
a training loss that far above chance is worse than a uniform guess on its own batches, so
carries something besides the cross-entropy: a Keras loss adds the weight penalties of its
layers, an EfficientNet on 100 sorghum cultivars 8.65 -> 8.38, 1.8-1.9 x ln 100, while its
evaluations sit at 4.607-4.615 against ln 100 = 4.605). A training loss just above the band is
not read: a fine-tune or resumed run at its floor, a healthy classifier's log in other units
(the dogs-vs-cats log +1 from epoch 47: evaluations 1.098-1.12, first already within 1.5 % of
ln 3, training loss 1.11-1.16), a classifier evaluated at its initialisation whose training
loss is still falling onto ln(k) from above; 1.5 x is a judgement between those (1.0-1.15 x)
and the sorghum log (1.8 x), not measured further. The evaluations no longer falling
(on two separate evaluations in a row, each fall none or at most half the fall before it, the
last smaller than the way still left to ln(k): a fall that slows that fast stops above ln(k);
one noisy evaluation slows one fall, not two; or no new low beyond the fourth digit on the last
two separate evaluations of the run, the first of the run the low to beat (never the run's
first evaluation: it may be of the untrained model), nor of a training loss in the band logged
with them: a stuck evaluation wobbles in its last digits, up and down, which resets a run of
slowing falls on every rise, while a classifier that starts slowly wobbles so with its training
loss already making new lows); the logged LR not ramping up. A
cross-entropy at or above ln(k) is no better than the uniform guess: a network that learned
anything about its labels evaluates below ln(k), and a network that sits just above it,
evaluation after evaluation, has an output that carries no information (a MobileNet on CIFAR-10
whose test loss goes 2.3085, 2.3044, 2.3037, 2.3036 in its first four epochs, the training loss
2.3297 -> 2.3038: it converges onto ln 10 from above, never through it). A healthy run that
starts at chance leaves the band downwards before its third evaluation after the first (the
benchmark's SGD CNNs sit within 0.2 % of ln 10 for at most 10 steps at their tuned LR,
evaluated every 25); one that learns slowly (the benchmark's SGD CNNs at 1/100 of their LR, their
evaluations 2.3113, 2.3100, 2.3086, ... 0.0013-0.0016 lower each time) passes through it at a
steady pace, a new low on every evaluation. A near-uniform output may evaluate 1 % off ln(k) (a BERT binary classifier whose
accuracy is exactly 0.5 at every epoch: 0.6945, 0.6997, 0.6949, 0.6931, 0.6932), but a band that
wide takes a classifier that starts slowly too (evaluations 0.6968, 0.6952, 0.6949, 0.6951, then
0.689, 0.61, 0.52: told to stop at its fourth): the band stays the training loss's. A network
that was once better than ln(k) has learned something, so every evaluation so far must be no
better than it (a validation loss rising back through ln(k) overfits). In a log of evaluations only, an
evaluation the same float as the one before is not counted (nor its fall of 0): with no
training loss to tell a logger's copies by, a line written again would read as a stall (an
LM's first evaluations, ~1 % above ln(vocabulary), each written four times).

The episode watches the validation loss: it closes once evaluations leave the band.

Parameters
----------
val_chance_band : float, default 0.015
    1.5% of ln(k) for evaluations. Set by: on the benchmark (seeds 0-7, 1,110 runs,
    evaluated every 25 steps) no healthy run has more than 3 evaluations in a row within
    1.5% of ln(k) with its training loss there too, and no healthy or LR-too-low run
    fires the rule; the 25 runs that do are LR x10/x100 runs stuck at chance (6-25
    evaluations). The real corpus's dead logs sit within 0.2-1.2%; 2% adds no healthy run
    either. That measurement is for the run of evaluations near ln(k) with the training loss
    there too only; its other uses (the first evaluation's test for the far-above training
    loss, and :mod:`.at_chance`'s band and floor for the evaluations of a loss at ln(k) itself
    from a first loss at chance) reuse the value unmeasured, on the two tune logs that needed
    them.

``chance_records`` and ``exact_chance_records`` (the runs' lengths) are :mod:`.at_chance`'s.

Examples
--------
A training loss 1% above ln 2, evaluations between 0.6955 and 0.6965:

>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.dead import DeadDetector
>>> from losswatch.detectors.types import Record
>>> recs = [Record(s, 0.70 + 0.001 * (s % 3), val_loss=0.6955 + 0.0005 * (s % 3)) for s in range(10)]
>>> [(a.step, a.evidence["watch"], a.action.type) for a in drive(DeadDetector(), recs)]
[(5, 'val_loss', 'stop')]

References
----------
bench/real/issues/mchengny__rwf2000-video-database-for-violence-detection__19.csv (provenance
in bench/real/SOURCES.md): a binary video classifier whose evaluations sit at ln 2.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..base import fmt
from ..features import lr_ramping
from . import Why
from .at_chance import CHANCE_K, chance_level, is_exactly
from .frozen import new_low

#: A training loss this many times ln(k) or more, where the evaluations began at ln(k), is not
#: read by the evaluations-no-better-than-chance run (see the module's text).
FAR_ABOVE = 1.5

if TYPE_CHECKING:
    from ..dead import DeadDetector
    from ..features import Features


def evaluation(d: DeadDetector, f: Features, i: int, prev: float) -> Why | None:
    """On an evaluation: extend or break every run; the verdict."""
    v = f.val[i]
    first = d.v_rec < 0
    # a separate evaluation: a record without one since the last, a log of evaluations only, or
    # a value of its own (a logger that repeats the last evaluation repeats its float)
    separate = f.rec[i] - d.v_rec > 1 or f.nl[i] == 0 or v != prev
    # the run of evaluations no better than chance counts falls: in a log of evaluations only
    # (no training loss to tell a logger's copies by) the same float again is no fall of 0
    falls = separate and not (f.nl[i] == 0 and v == prev)
    if falls:
        _track_falls(d, v)
    _track_at_level(d, v, prev)
    exact = _at_ln_k_itself(d, f, i, first, separate)
    above = _no_better_than_chance(d, f, i, first, falls)
    near = _near_ln_k(d, f, i)
    return exact or above or near


def _track_at_level(d: DeadDetector, v: float, prev: float) -> None:
    """The run of evaluations within ``val_chance_band`` of one ln(k), counted in values of their
    own (the same float again, a logger repeating its last evaluation, neither extends nor breaks
    it): :mod:`.at_chance` reads it for a training loss at ln(k) itself from a first loss at chance."""
    lv = chance_level(v, d.val_chance_band)
    if lv is None:
        d.vs_n = 0
    elif lv != d.vs_level or d.vs_n == 0:
        d.vs_level, d.vs_n = lv, 1
    elif v != prev:
        d.vs_n += 1


def _at_ln_k_itself(d: DeadDetector, f: Features, i: int, first: bool, separate: bool) -> Why | None:
    """The run of separate evaluations at ln(k) itself, the run's first evaluation aside."""
    v = f.val[i]
    lv = chance_level(v, d.val_chance_band)
    if first or lv is None or not is_exactly(v, lv):
        d.vx_n = 0
        return None
    if lv != d.vx_level:
        d.vx_level, d.vx_n = lv, 0
    d.vx_n += separate
    if d.vx_n >= d.exact_chance_records and not lr_ramping(f, i):
        k = CHANCE_K[lv]
        return Why(f"the validation loss has been ln({k}) = {lv:.4f} itself on {d.vx_n} separate "
                   f"evaluations (now {v:.6g}): the network outputs a uniform guess over {k} classes on "
                   "every example", lv, "val_loss", d.val_chance_band * lv)
    return None


def _track_falls(d: DeadDetector, v: float) -> None:
    """On a separate evaluation: its fall from the one before, and the run of falls in a row
    that slowed (at most half the fall before, or none). A repeated row is no evaluation: its
    fall of 0 would read as a stall."""
    if d.vb_v == d.vb_v:
        fall = d.vb_v - v
        slowed = fall <= 0.0 or (d.vb_fall < math.inf and fall <= 0.5 * d.vb_fall)
        d.vb_slow = d.vb_slow + 1 if slowed else 0
        d.vb_fall = fall
    d.vb_v = v


def _no_better(v: float, lv: float) -> bool:
    """Is ``v`` at or above ln(k) = ``lv``, or ln(k) itself as far as its four significant digits tell?"""
    return v >= lv or is_exactly(v, lv)


def _low_since(x: float, low: float, since: int, scale: float) -> tuple[float, int]:
    """The lowest value and the separate values since it, once ``x`` is read (a new low beyond
    the fourth digit of ``scale``, :func:`.frozen.new_low`, restarts the count)."""
    return (x, 0) if new_low(x, low, scale) else (low, since + 1)


def _no_better_than_chance(d: DeadDetector, f: Features, i: int, first: bool, separate: bool) -> Why | None:
    """The run of separate evaluations at or just above ln(k), the training loss (if logged) in
    the band too, or far above it where the first evaluation was at ln(k)."""
    v, train = f.val[i], f.lprev[i]
    lv = chance_level(v, d.chance_band)
    best = f.vbest[i]  # no evaluation so far beat ln(k) either: a network that was better has
    # learned something (a validation loss that rises through ln(k) overfits)
    # a training loss below the band has learned its batches; one far above ln(k) (FAR_ABOVE x)
    # is read only where the evaluations began at ln(k) (the first within their band), so never
    # were anywhere but no better than chance: its level then says nothing more (a Keras loss
    # that adds its weight penalties sits far above ln(k)). One just above the band is a loss in
    # other units or still on its way down, not read
    waived = lv is not None and train == train and train >= FAR_ABOVE * lv and \
        abs(f.v0[i] - lv) <= d.val_chance_band * lv
    if first or lv is None or not (_no_better(v, lv) and _no_better(best, lv)) or (train == train and not waived and (
            train < lv - d.chance_band * lv or train > lv + d.val_chance_band * lv)):
        d.vb_n = 0
        return None
    if lv != d.vb_level or d.vb_n == 0:
        # a run of its own (never from the run's first evaluation, which may be of the untrained
        # model): the low to beat is its first evaluation, and the training loss's too
        d.vb_level, d.vb_n, d.vb_low, d.vb_since = lv, 0, v, 0
        d.vb_tlow, d.vb_tsince = train, 0
    elif separate:
        d.vb_low, d.vb_since = _low_since(v, d.vb_low, d.vb_since, abs(v))
        if d.vb_tlow != d.vb_tlow:
            # the run began before any training loss was logged: its first one is the low to beat
            # (against NaN no loss would ever be a new low, and a falling one would read as stuck)
            d.vb_tlow, d.vb_tsince = train, 0
        elif train == train:
            d.vb_tlow, d.vb_tsince = _low_since(train, d.vb_tlow, d.vb_tsince, lv)
    d.vb_n += separate
    # converged onto ln(k), not passing through it: the evaluations' fall slowed on two separate
    # evaluations in a row (each fall at most half the one before, or none) and their last fall
    # is smaller than the way still left to ln(k) (a fall that slows that fast stops above it).
    # A network learning slowly (an LR far too low) falls through ln(k) at a steady pace, and
    # one noisy evaluation slows one fall, not two. Or no new low on the last two separate
    # evaluations, nor of a training loss in the band logged with them (a classifier that starts
    # slowly wobbles in its evaluations' last digits while its training loss already falls)
    wobbling = d.vb_since >= 2 and (train != train or waived or d.vb_tsince >= 2)
    stalled = d.vb_slow >= 2 and (d.vb_fall <= 0.0 or v - lv >= d.vb_fall) or wobbling
    if d.vb_n >= d.exact_chance_records and stalled and not lr_ramping(f, i):
        k = CHANCE_K[lv]
        tail = f", the training loss {train:.5g}" if train == train else ""
        return Why(f"the validation loss has been at or just above ln({k}) = {lv:.4f}, no better than a "
                   f"uniform guess over {k} classes, on {d.vb_n} separate evaluations (now {v:.5g}{tail})",
                   lv, "val_loss", d.chance_band * lv,
                   checks=f"The network evaluates no better than a uniform guess over {k} classes: stop and "
                   "check the labels (do they match the inputs? all one class?), the loss function, the "
                   "initialisation and the LR (far too high or too low).")
    return None


def _near_ln_k(d: DeadDetector, f: Features, i: int) -> Why | None:
    """The run of evaluations near ln(k) with the training loss there too."""
    v = f.val[i]
    lv = chance_level(v, d.val_chance_band)
    train = f.lprev[i]
    if lv is not None and train == train and chance_level(train, d.val_chance_band) != lv:
        lv = None
    if lv is None:
        d.vc_n = 0
        return None
    if d.vc_n == 0 or lv != d.vc_level:
        d.vc_level, d.vc_n, d.vc_low, d.vc_improved = lv, 1, v, 1
    else:
        d.vc_n += 1
        if new_low(v, d.vc_low, lv):
            d.vc_improved = d.vc_n
        d.vc_low = min(d.vc_low, v)
    if d.vc_n >= d.chance_records and d.vc_n - d.vc_improved >= d.chance_records // 2:
        k = CHANCE_K[lv]
        return Why(f"the validation loss has sat within {fmt(100 * d.val_chance_band)}% of ln({k}) = "
                   f"{lv:.4f} for {d.vc_n} evaluations (now {fmt(v)}, the training loss {fmt(train)}): "
                   f"the network predicts a uniform guess over {k} classes", lv, "val_loss",
                   d.val_chance_band * lv)
    return None


def forget(d: DeadDetector) -> None:
    d.vs_n = 0
    d.vc_n = 0
    d.vx_n = 0
    d.vb_n = 0
