"""Held above: the smoothed validation loss stays far above its best for several evaluations
while the training loss keeps falling. The rule for long logs with noisy evaluations.

Condition: the validation loss, smoothed over evaluations (EMA ``alpha``), has been above its
best smoothed value by more than ``tol`` (relative) for ``patience`` consecutive evaluations,
and the latest evaluation itself is above that bar (a smoothed level held up by an earlier spike
while the evaluations fall back is the spike's tail, not memorisation: a benchmark run at 10x
its LR whose validation loss jumps 0.83 -> 4.07 and falls on every evaluation after), or the
spike has passed: the streak's highest evaluation is ``patience`` evaluations back, the last
``patience`` evaluations do not fall on each one and none since the highest came back under the
best (the level is then the evaluations' own: a
benchmark run with an injected spike settles 25-35 % above its best, up and down around the bar,
and was otherwise never warned; benchmark seeds 0-1 overfitting recall 0.50 -> 0.60); and the
training loss fell since that best (a flat training loss with a wandering validation loss is
noise, not memorisation; a rising one is a divergence, another detector): in a log with many
training records per evaluation its trend (``features.trend``, ~50 records) fell by
``train_fall``; in a log with fewer than :data:`~.train_loss.DENSE_GAP` (10) training records
per evaluation (an epoch log; a trainer's log lines, each the mean over its interval) the trend
or its level at the evaluations (``features.fast``, an EMA of the lines with a one-record
half-life) fell by ``train_fall``, and that level must also have fallen since the best by more
than :data:`~.train_loss.TRAIN_NOISE` (3) times the noise of the training lines read at the
evaluations around the best (:func:`~.train_loss.noise`: their downward bends since the best
and just before it, floored at the log's print resolution), from the lowest level of the last
:data:`~.train_loss.BEST_LOW` evaluations up to the best. Why not the trend alone there: ~50
records are ~50 epochs, and in a log of 100-150 epochs the trend still carries the first
epochs' descent, so it "falls" whatever the training loss does now (a 100-epoch Keras history
whose training loss sat at 0.02-0.04 for 30 epochs read as a trend falling 0.62 -> 0.52; a
148-epoch one whose training loss rose 0.022 -> 0.031 as a trend falling 0.14 -> 0.13; the
same Keras history with each epoch written as 3 or 5 noisy lines). Why against its noise: at
the end of a healthy run both losses wander around their floors, and a validation loss held
25 % above a lucky low while the training level is a little lower than at that low is the same
noise on both sides; a memorising model fits its training set better epoch after epoch, a
steady fall that bends the lines little. Why the noise around the best, not a running average
of the whole log: in a 10-20 epoch log a ~10-row average is the first epochs' descent, and a
memorising run was never warned (a 12-epoch one falling 0.345 -> 0.312 after its best). Not
when the
best is an evaluation of the untrained model (:mod:`.untrained`) or the smoothed validation loss
is above ``max_ratio`` x its best: a model that never generalised or blew up (the benchmark's
SGD x100 runs: val 2.3 -> 16) is broken, not memorising.

Parameters
----------
patience : int, default 3
    Evaluations in a row above the bar: one noisy evaluation is not a trend (Keras
    EarlyStopping's patience).
tol : float, default 0.25
    How far above its best (relative) the smoothed validation loss must be.
    Set by: the benchmark's small validation sets wobble by 10-30 %: 0.02 fired on most healthy
    runs, 0.2 still started streaks on single noisy evaluations; 0.25 is the benchmark's own
    definition (the last three evaluations 1.25x the best).
alpha : float, default 0.5
    EMA weight of a new evaluation: smoothing two-record-wise keeps one bad evaluation from
    setting or breaking a streak (benchmark false alarms 7.4 -> 3.3 per 10k healthy steps).
max_ratio : float, default 3.0
    Above this multiple of its best the model blew up: not overfitting.
train_fall : float, default 0.05
    How much the training loss must have fallen since the best (relative).
    Set by: benchmark runs whose training loss was flat while the validation loss wandered.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.overfitting import OverfittingDetector
>>> from losswatch.detectors.types import Record
>>> zigzag = [0.0, 0.3]  # every other evaluation 0.3 higher: never three rises in a row
>>> recs = [Record(s, 2.0 - s / 400, val_loss=1.0 + abs(s - 200) / 100 + zigzag[s // 20 % 2] if s % 20 == 0 else None)
...         for s in range(400)]
>>> alerts = drive(OverfittingDetector(), recs)
>>> [(a.step, a.evidence["rule"], a.action.params) for a in alerts]
[(300, 'held_above', {'to_step': 200})]
>>> print(alerts[0].message)
overfitting: val_loss (smoothed 2.01) is 54.8% above its best (1.3 at step 200) while the training loss fell 1.62 -> 1.37

References
----------
Keras EarlyStopping(patience, restore_best_weights); SageMaker Debugger's Overfit rule; losslint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import fmt
from .train_loss import DENSE_GAP, fell_past_noise
from .untrained import is_untrained

if TYPE_CHECKING:
    from ..features import Features
    from ..overfitting import OverfittingDetector


def observe(d: OverfittingDetector, f: Features, i: int, raw: float, v: float, step: int) -> bool:
    """Track the smoothed best, the run of evaluations above it (its highest raw evaluation and
    the evaluations since) and the raw falls in a row; True on a new best."""
    d.eval_gap, d.eval_rec = f.rec[i] - d.eval_rec, f.rec[i]
    if v < d.best:
        d.falls = d.falls + 1 if raw < d.last_raw else 0
        d.last_raw = raw
        d.best = v
        d.best_step = step
        d.trend_at_best = f.trend[i]
        d.train_at_best = f.fast[i]
        d.above = 0
        return True
    if d.trend_at_best != d.trend_at_best:
        # no training loss was logged before the best (its evaluation came first): the first
        # one logged after it stands for it
        d.trend_at_best, d.train_at_best = f.trend[i], f.fast[i]
    if v > d.best + d.tol * abs(d.best):
        d.above += 1
        if d.above == 1 or raw >= d.peak:
            d.peak, d.since_peak, d.back_under = raw, 0, False
        else:
            d.since_peak += 1
            d.back_under = d.back_under or raw < d.best
    else:
        d.above = 0
    d.falls = d.falls + 1 if raw < d.last_raw else 0
    d.last_raw = raw
    return False


def spike_passed(d: OverfittingDetector) -> bool:
    """The run's highest evaluation is ``patience`` evaluations back and the evaluations since do
    not fall on each one: the level that holds the smoothed value up is the evaluations' own, not
    a spike's tail (a tail falls evaluation after evaluation until it is back under the bar); and
    none of them came back under the best (a model that evaluates as well as at its best after
    the spike has not lost what it generalised: a ResNet fine-tune's epochs 1.44, 7.42, 1.29,
    1.54, 1.62, whose smoothed value is still the spike's)."""
    return d.since_peak >= d.patience and d.falls < d.patience - 1 and not d.back_under


def check(d: OverfittingDetector, f: Features, i: int, raw: float, v: float) -> tuple[str, dict[str, Any]] | None:
    if d.above < d.patience:
        return None
    if not raw > d.best + d.tol * abs(d.best) and not spike_passed(d):
        return None  # the latest evaluation is back below the bar: a spike's tail holds the level up
    trend, tb = f.trend[i], d.trend_at_best
    fell = tb == tb and trend < tb - d.train_fall * abs(tb)
    if d.eval_gap < DENSE_GAP:
        # an evaluation logged with every training record or every other one (an epoch log, a
        # trainer's averaged log lines): the trend (~50 records) spans ~50 evaluations there and
        # still carries the first epochs' descent, so it "falls" whatever the training loss does
        # now; the training level at the evaluations must also have fallen out of its noise
        # since the best (and it may stand for the trend's fall)
        lv, lb = f.fast[i], d.train_at_best
        if not fell:
            trend, tb, fell = lv, lb, lb == lb and lv < lb - d.train_fall * abs(lb)
        fell = fell and fell_past_noise(d, lb, lv)
    if not (f.nl[i] > 0 and fell):
        return None
    if is_untrained(d, d.best_step) or v > d.max_ratio * abs(d.best):
        return None  # val never improved, or it exploded: a broken model, not memorisation
    pct = 100 * (v / d.best - 1) if d.best else 0.0
    text = (f"val_loss (smoothed {fmt(v)}) is {fmt(pct)}% above its best ({fmt(d.best)} at step "
            f"{d.best_step}) while the training loss fell {fmt(tb)} -> {fmt(trend)}")
    ev = {"val_loss": raw, "val_smoothed": v, "best_val_smoothed": d.best, "best_step": d.best_step,
          "train_trend": trend, "train_trend_at_best": tb, "evaluations": d.above}
    return text, ev
