"""Drift: the raw validation loss trends up, far outside its own evaluation-to-evaluation
noise, over many evaluations since its best, while the training loss keeps falling. The rule
for long epoch logs whose validation loss creeps up slowly: each evaluation only a little above
the last, with noisy steps down on the way, so ``steady_rise`` (rises in a row) never holds and
``held_above`` (25 % above the best) holds late or never.

Condition: at least ``drift_evals`` evaluations since the raw best (the lowest validation loss
so far), none a new best; a least-squares line through them (validation loss against the
evaluation's index, the best itself left out, so a lucky low does not make the slope) rises
with a t-statistic >= ``drift_t`` (the slope against its standard error from the scatter about
the line: the evaluations' own noise, not the progress scale); the line's latest value is
>= ``drift_rise`` above the best (relative); the training loss (read as :mod:`.steady_rise`
reads it, :func:`~.train_loss.train_at`: the one logged with the evaluation in an epoch log, its
level in a dense one) is <= ``drift_train`` x its value at the best. Not when the
best is an evaluation of the untrained model (:mod:`.untrained`) or the latest evaluation is
above ``max_ratio`` x the best (a blow-up, not memorisation). The sums the line needs are kept
as they come (constant state); the episode closes at a new raw best.

Why: a memorising model's validation loss rises with every epoch it fits the training set
better, a trend; a converged healthy run's validation loss wanders around a level, often above a
lucky best (the benchmark's small validation sets sit 15-25 % above theirs while the training
loss halves), with no slope. The slope's t-statistic tells the two apart where the size of the
rise does not.

Parameters
----------
drift_evals : int, default 8
    Evaluations since the best before a line is judged.
    Set by: offline, on the benchmark seeds 0-7 (1,110 runs) and the tune part, 6 with
    ``drift_t`` 3 fired on two healthy runs of seeds 0-1 (an MLP/SGD and an MLP/Adam x10 run);
    8 with 3 on one; 8 with 4-6 on none.
drift_t : float, default 5.0
    t-statistic of the slope.
    Set by: 4 fires on one held-out overfitting run that 5 does not, and no healthy run fires at
    4-6; 5 keeps a step from the edge where healthy runs begin (3).
drift_rise : float, default 0.1
    How far above the best (relative) the line's latest value must be: a drift of 2-3 % is
    within what a dataset shift between epochs can do.
drift_train : float, default 0.8
    The training loss at most this multiple of its value at the best: it kept falling.
    Set by: 0.5, 0.7 and 0.8 give the same alerts on the benchmark's seeds 0-7 (full, every
    10th and 50th row, excerpts); on the tune part 0.8 also finds a GPT-2 fine-tune with a
    decaying LR whose training loss falls slowly (2.06 -> 1.46 in 50 epochs, 0.71x at the end)
    while its validation loss trends up 3.42 -> 4.14 (t 27 at the alert), and no healthy log
    or variant of one gets an alert (0.9 finds the same files).

``max_ratio`` is shared with :mod:`.held_above`.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.overfitting import OverfittingDetector
>>> from losswatch.detectors.types import Record
>>> val = [1.35, 1.33, 1.35, 1.34, 1.37, 1.36, 1.39, 1.38, 1.41, 1.40, 1.43, 1.42, 1.45, 1.44, 1.47, 1.46]
>>> recs = [Record(e, 0.7 * 0.9 ** e, val_loss=v) for e, v in enumerate(val, 1)]
>>> alerts = drive(OverfittingDetector(), recs)
>>> [(a.step, a.evidence["rule"], a.action.params) for a in alerts]
[(16, 'drift', {'to_step': 2})]
>>> print(alerts[0].message)  # doctest: +NORMALIZE_WHITESPACE
overfitting: val_loss drifted up over the 14 evaluations since its best (1.33 at step 2) to
    1.47 (a trend 13.6 times its noise), while the training loss fell 0.567 -> 0.13

References
----------
bench/real/histories/wei-jin-fang__carotidplaquestabilityclassifier__output-train-20251121-185354-training-history.csv
(provenance in bench/real/SOURCES.md): a 50-epoch log whose validation loss creeps 1.326 -> 1.6
with epoch-to-epoch noise of ~0.02 while the training loss falls 0.65 -> 0.08. Prechelt,
"Early stopping - but when?" (1998); the t-test of a regression slope (any statistics text).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..base import fmt
from .train_loss import no_train, train_at, train_words
from .untrained import is_untrained

if TYPE_CHECKING:
    from ..features import Features
    from ..overfitting import OverfittingDetector


def observe(d: OverfittingDetector, raw: float, new_raw_best: bool) -> None:
    """Keep the sums of the evaluations since the raw best (values less the best, for precision)."""
    if new_raw_best:
        d.dn, d.dsy, d.dsxy, d.dsyy = 0, 0.0, 0.0, 0.0
        return
    y = raw - d.rb
    d.dsy += y
    d.dsxy += d.dn * y
    d.dsyy += y * y
    d.dn += 1


def line(d: OverfittingDetector) -> tuple[float, float]:
    """The fitted line's latest value (less the best) and its slope's t-statistic."""
    n = d.dn
    mx, my = (n - 1) / 2, d.dsy / n
    sxx = n * (n * n - 1) / 12
    sxy = d.dsxy - mx * d.dsy
    b = sxy / sxx
    syy = max(d.dsyy - d.dsy * my, 0.0)
    res = max(syy - b * sxy, 0.0)
    if not (math.isfinite(syy) and math.isfinite(res)):
        return math.nan, math.nan  # the sums overflowed (an evaluation near 1e154): no line to fit
    if res <= 1e-12 * syy:  # on the line to rounding: no scatter to measure the slope against
        return my + b * (n - 1 - mx), (math.inf if b > 0 else 0.0)
    t = b / math.sqrt(res / (n - 2) / sxx)
    return my + b * (n - 1 - mx), t


def check(d: OverfittingDetector, f: Features, i: int, raw: float) -> tuple[str, dict[str, Any]] | None:
    if d.dn < d.drift_evals or is_untrained(d, d.rb_step) or raw > d.max_ratio * abs(d.rb):
        return None
    up, t = line(d)
    if not (t >= d.drift_t and up >= d.drift_rise * abs(d.rb)):  # NaN: no line, no alert
        return None
    train, tb = train_at(d, f, i), d.rb_train
    if not ((train == train and tb == tb and train <= d.drift_train * tb) or no_train(f, i)):
        return None
    # evaluations exactly on a line have no scatter: the slope is certain, no ratio to quote
    trend = f"a trend {fmt(t)} times its noise" if math.isfinite(t) else "a straight line, no scatter"
    text = (f"val_loss drifted up over the {d.dn} evaluations since its best ({fmt(d.rb)} at step "
            f"{d.rb_step}) to {fmt(d.rb + up)} ({trend}){train_words(f, i, tb, train)}")
    ev = {"val_loss": raw, "best_val": d.rb, "best_step": d.rb_step, "val_fitted": d.rb + up,
          "slope_t": t if math.isfinite(t) else None, "train_loss": train,
          "train_loss_at_best": tb, "evaluations": d.dn}
    return text, ev
