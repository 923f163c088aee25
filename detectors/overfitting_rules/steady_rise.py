"""Steady rise: the raw validation loss rose on every evaluation since its best while the
training loss fell. The rule for short logs evaluated once per epoch, where ``held_above``'s
smoothing and patience need more evaluations than the log has.

Condition: the last ``rises`` evaluations each rose above the one before, the first of them
above the run's lowest validation loss (the raw best), and at each of them the training loss
(read by :func:`~.train_loss.train_at`: in an epoch log the one logged with the evaluation,
or the last before it; in a dense log its level; where the best came before any training loss
was logged, the first one logged after it) fell below its value at the one before;
the latest is above that best by at least ``rise`` on the progress scale (against the validation
progress made before the best, first evaluation - best, when that is larger than the best;
:func:`~losswatch.detectors.progress._pratio` with the raw share); the training loss fell by
``train_fall`` since the best. Not when the best is an evaluation of the untrained model
(:mod:`.untrained`) or the latest is above ``max_ratio`` x the best (a blow-up).

Why counted in evaluations and why monotone: an epoch log has 5-20 evaluations, each an average
over a whole validation set, so a rise on three in a row while the training loss falls at each
is the memorisation trend itself (each epoch fits the training set better and generalises
worse), and noise around a flat level rarely gives three rises in a row
from its minimum. The size of the rise is measured against the progress the validation loss
made: on a log whose validation loss fell 2.3 -> 0.19, a drift to 0.23 is the noise of a
converged model (the benchmark's warm-up runs), while a validation loss that went 0.57 -> 0.49
and then rises to 0.64 has given back more than all of its progress. The training loss is read
at the evaluations, not as a long running level: a trend (~50 records) still falling from the
first steps' descent lags, and made an unstable run (its per-step loss flat at 0.45-0.6 while the
validation loss wandered up) look like a memorising one. But where many training records lie
between two evaluations (a dense per-step log), the one at the evaluation is one minibatch's
draw: three such draws fall in a row one time in six around a flat level, so from
:data:`~.train_loss.DENSE_GAP` (10) records between evaluations it is read as the level over
the last ~10 records (``features.slow``), which an evaluation 10 or more records later no
longer lags; an epoch log's line is already the mean over its epoch and is read as it is. Set
by: a held-out benchmark run (least squares, Adam at 10x; bench/holdout seed 2) flat at ~0.55
with draws from 0.2 to 1.4, whose single records at four evaluations fell 0.72 -> 0.64 -> 0.50
-> 0.44 while its validation loss wobbled up 0.56 -> 0.69 and back: it was warned at step 125
(held-out seeds 2-3 false alarms 0.96 -> 0.80 per 10k healthy steps).

Parameters
----------
rises : int, default 3
    Rises in a row, from the best, that make a trend.
    Set by: on the benchmark's 246 runs, 3 and 4 give the same alerts as without the rule; 2
    adds a false alarm (an Adam x100 warm-up run whose validation loss wobbles up twice). On
    the tune part of the real corpus 3 catches the six-epoch logs one evaluation before 4.
    Without a training loss (:mod:`.train_loss`) one rise more (4): each rise then carries one
    piece of evidence, not two (the evaluation up *and* the training loss down at it), and the
    order of noisy evaluations alone gives 3 rises in a row often (4 values in rising order: 1 in
    24 for independent noise, more after an early low draw; 4 rises: 1 in 120). Set by: a
    continued-training run (bench/real, healthy, no training loss before its 8th evaluation)
    whose validation loss, noisy between 0.29 and 0.60 around a flat ~0.42, rose 3 times from a
    low draw at its 3rd evaluation; on the benchmark (seeds 0-3) nothing changes, on the tune
    part's variants the evaluations-only copies of two short epoch logs that rise 3 times and
    then wobble are no longer caught.
rise : float, default 0.1
    How far above its best (progress scale) the latest evaluation must be.
    Set by: 0.02 to 0.2 give the same alerts on the benchmark and the real corpus (the real
    epoch logs rose by 8-350 % of their scale); 0.1 is the middle of that range, and keeps a
    drift that is small against the progress made (on the benchmark's healthy warm-up runs,
    0.5-2 % of it) from counting. On the held-out seeds 2-7, 0.03 adds 7 alarms on healthy
    linear regressions (their val drifting up by 3-10 % of their progress).

``train_fall`` and ``max_ratio`` are shared with :mod:`.held_above`.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.overfitting import OverfittingDetector
>>> from losswatch.detectors.types import Record
>>> train = [0.68, 0.47, 0.35, 0.28, 0.22, 0.16]
>>> val = [0.57, 0.49, 0.51, 0.56, 0.64, 0.77]
>>> alerts = drive(OverfittingDetector(), [Record(e, x, val_loss=v) for e, x, v in zip(range(1, 7), train, val)])
>>> [(a.step, a.evidence["rule"], a.action.params) for a in alerts]
[(5, 'steady_rise', {'to_step': 2})]
>>> print(alerts[0].message)  # doctest: +NORMALIZE_WHITESPACE
overfitting: val_loss rose on each of the last 3 evaluations since its best (0.49 at step 2):
    0.49 -> 0.51 -> 0.56 -> 0.64, while the training loss fell 0.47 -> 0.22

References
----------
bench/real/issues/lyhue1991__eat_tensorflow2_in_30_days__69__*.csv (provenance in
bench/real/SOURCES.md): two six-epoch logs whose validation loss rises from epoch 2 while the
training loss falls; Keras EarlyStopping
(patience counted in evaluations); Prechelt, "Early stopping - but when?" (1998): the UP_s
criterion, s successive increases of the validation error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import fmt
from ..progress import RAW_SHARE, _pratio
from .train_loss import no_train, train_at, train_words
from .untrained import is_untrained

if TYPE_CHECKING:
    from ..features import Features
    from ..overfitting import OverfittingDetector


def observe(d: OverfittingDetector, f: Features, i: int, raw: float, step: int) -> bool:
    """Track the raw best, the training loss there and the rises since; True on a new best."""
    train = train_at(d, f, i)  # the training loss at this evaluation (train_loss.train_at)
    if raw < d.rb:
        d.rb, d.rb_step, d.rb_train = raw, step, train
        d.rise_n, d.rise_vals, d.rise_train = 0, [], train
        return True
    if d.rb_train != d.rb_train:
        # no training loss was logged before the best (its evaluation came first): the first one
        # logged after it stands for it
        d.rb_train = train
    fell = train < d.rise_train or d.rise_train != d.rise_train or no_train(f, i)
    if d.rise_n >= 0 and raw > (d.rise_vals[-1] if d.rise_vals else d.rb) and fell:
        d.rise_n += 1
        d.rise_vals.append(raw)
        d.rise_train = train
        del d.rise_vals[:-d.rises]  # the message quotes the last `rises` values
    else:
        d.rise_n, d.rise_vals = -1, []  # the run of rises from the best is broken until the next best
    return False


def check(d: OverfittingDetector, f: Features, i: int, raw: float) -> tuple[str, dict[str, Any]] | None:
    if d.rise_n < d.rises + (1 if no_train(f, i) else 0):  # the order alone: one rise more
        return None
    if is_untrained(d, d.rb_step) or raw > d.max_ratio * abs(d.rb):
        return None
    if _pratio(raw, d.rb, d.first_val, RAW_SHARE) - 1.0 < d.rise:
        return None
    train, tb = d.rise_train, d.rb_train
    if not (train < tb - d.train_fall * abs(tb) or no_train(f, i)):
        return None
    path = " -> ".join([fmt(d.rb)] + (["..."] if d.rise_n > len(d.rise_vals) else []) + [fmt(x) for x in d.rise_vals])
    text = (f"val_loss rose on each of the last {d.rise_n} evaluations since its best ({fmt(d.rb)} at "
            f"step {d.rb_step}): {path}{train_words(f, i, tb, train)}")
    ev = {"val_loss": raw, "best_val": d.rb, "best_step": d.rb_step, "train_loss": train,
          "train_loss_at_best": tb, "evaluations": d.rise_n}
    return text, ev
