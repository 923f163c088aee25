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
and was otherwise never warned; benchmark seeds 0-1 overfitting recall 0.50 -> 0.60); the
training-loss trend (``features.trend``, ~50 records) fell by ``train_fall`` since that best,
or, in a log that has an evaluation on every training record or every other one (an epoch log; a
trainer's log lines, each the mean over its interval: :data:`EPOCH_GAP`), the training loss
logged with the evaluation fell by ``train_fall`` since the one logged with the best (the trend,
tens of records, lags tens of epochs there) (a flat training loss with a wandering validation
loss is noise, not memorisation; a rising one is a divergence, another detector). Not when the
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
from .untrained import is_untrained

if TYPE_CHECKING:
    from ..features import Features
    from ..overfitting import OverfittingDetector


#: Records from one evaluation to the next at most which the training loss logged with an
#: evaluation is read as the training level (see the module doc).
EPOCH_GAP = 2


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
        d.train_at_best = f.lprev[i]
        d.above = 0
        return True
    if d.trend_at_best != d.trend_at_best:
        # no training loss was logged before the best (its evaluation came first): the first
        # one logged after it stands for it
        d.trend_at_best, d.train_at_best = f.trend[i], f.lprev[i]
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
    if not (f.nl[i] > 0 and tb == tb and trend < tb - d.train_fall * abs(tb)):
        # an evaluation logged with every training record or every other one (an epoch log, a
        # trainer's averaged log lines): the training loss printed with it is already a mean
        # over the interval, and the trend (tens of records) lags it by tens of epochs
        trend, tb = f.lprev[i], d.train_at_best
        if not (d.eval_gap <= EPOCH_GAP and tb == tb and trend < tb - d.train_fall * abs(tb)):
            return None
    if is_untrained(d, d.best_step) or v > d.max_ratio * abs(d.best):
        return None  # val never improved, or it exploded: a broken model, not memorisation
    pct = 100 * (v / d.best - 1) if d.best else 0.0
    text = (f"val_loss (smoothed {fmt(v)}) is {fmt(pct)}% above its best ({fmt(d.best)} at step "
            f"{d.best_step}) while the training loss fell {fmt(tb)} -> {fmt(trend)}")
    ev = {"val_loss": raw, "val_smoothed": v, "best_val_smoothed": d.best, "best_step": d.best_step,
          "train_trend": trend, "train_trend_at_best": tb, "evaluations": d.above}
    return text, ev
