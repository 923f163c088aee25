"""Frozen: the loss (or the validation loss) prints the same four significant digits record
after record: a constant output.

Condition:

- on a loss record: ``frozen_records`` consecutive finite losses the same to four significant
  digits (:func:`same_4_digits`). Real minibatch losses always move in the 4th digit; a printed
  0.6931 twenty times is a constant output. A validation loss that moves in its four digits
  breaks the run (:func:`evaluation_moved`): a constant output evaluates to a constant too,
  while a logger that prints the last training loss it computed on every evaluation row
  repeats one value as the evaluations move (Hugging Face model-card tables repeat the
  training loss of the last logging step on each evaluation row until the next one: 6-12 rows
  of a fine-tune that learns, on two healthy logs of the tune part);
- on an evaluation: ``frozen_records`` consecutive finite validation losses the same to four
  significant digits (an epoch validation loss of exactly 0.2000), counted only where the
  training loss logged with it (if any) is frozen too, on this row and since the evaluation
  before (a logger that repeats the last evaluation on every line is not a frozen model; a row
  whose training loss is the same float as at the evaluation before, carrying more digits than a
  rounded print (:func:`rounded_print`), is a copy an export forward-filled and is not counted)
  and only when the validation loss never fell below 0.9x its first value (a converged
  evaluation at the end of a long decay prints the same four digits), judged only where the
  evaluations begin where training began
  (:func:`~losswatch.detectors.progress.logged_from_start` on the evaluations' steps): the
  second half of a GPT-2 run's validation log, converged and falling 1e-4 per evaluation
  (2.9287, 2.9286, ...), has no earlier level to show the decay (bench/healthy_variants.py).

A run that never learned needs fewer records (``unlearned_records``): its first values are
where it stands, and nothing since was better, so no converged loss can print the same digits.
On an evaluation: the validation loss the same to four significant digits on ``unlearned_records``
evaluations in a row and the training loss logged with each the same to four digits as at the
one before (both printed with four significant digits: :func:`four_significant`; a training loss
that is the same float carrying more digits than a rounded print is a copy an export
forward-filled, not counted), neither below its first value (the best validation loss so far, the raw best training
loss: beyond ``chance_band``), the evaluations logged from
the start, not at a chance level ln(k) (the chance rules judge those: a zero-initialised head
prints ln(k) itself at the start) and the logged LR not ramping up (a Keras model whose loss and
val_loss print 1.0097 and 1.0082 epoch after epoch: an epoch mean and a separate evaluation, both
frozen). A logger that repeats the last training loss on each evaluation row repeats one
column while the evaluation moves; two frozen columns are a frozen model. A training loss alone
repeated on a few records is not: a logger that writes each value m times (gradient
accumulation, an export forward-filled to every step) repeats every value, a rising loss's too.

A loss printed with more than five significant digits (Caffe's six, a full-precision float)
and the same to six of them (:func:`~losswatch.detectors.dead_rules.weights_frozen.exact_repeat`)
needs ``unlearned_records`` records in a row, once the loss has moved off its first measurement
and where it sits at or above the first loss: a minibatch loss with noise moves in its sixth
digit on every record, so three prints of one six-digit value are a constant output, and one no
better than where the run started has learned nothing (a PSPNet fine-tune whose softmax
saturated: 92.0984, then 122.271 = 1.4 x 87.3365 on every print). Not a run frozen from the first
measurement (a logger that writes each line k times shows its first value k times before its
copies are counted, :mod:`~losswatch.detectors.copies`), nor a value below the first loss (a
full-batch optimisation converged at its floor prints one value to all its digits), and the run
longer than twice any run of one six-digit value before it: a logger's copies repeat each value
a bounded number of times, evenly or not (an export that merges a loss logged every 50 steps
with an LR logged every 30 and fills the loss forward repeats each value on 2 or 3 rows).
A loss frozen at exactly 0 counts only when the run started there (a model that memorised its
data prints 0.0000 too, with a zero grad-norm, and is not dead); a small loss printed with four
decimals (0.0003, fewer than three significant digits) is not judged at all: a converged
fine-tune prints the same value while its loss still moves (:func:`same_4_digits`).

Parameters
----------
frozen_records : int, default 6
    six identical prints: the issue threads' frozen runs show 9-20; five in a row already
    has a chance of ~1e-10 for a real minibatch loss with 0.1% noise. :mod:`.weights_frozen`
    counts its evaluations against it too.
unlearned_records : int, default 3
    Evaluations in a row for a run that never learned (see above). Set by the class: an epoch
    log shows a model that never learned from its first epochs, and three is one epoch and two
    that repeat it in both columns. An epoch mean with 0.1 % noise keeps its four significant
    digits by chance about one time in twenty; both columns twice in a row, about one in 10^5.
    Checked: no healthy log of the tune part (nor its variants) and no healthy benchmark run
    (seeds 0-7, full and every 10th / 50th row) has two frozen columns on 3 evaluations in a
    row without having learned. Also the records of a loss frozen to six significant digits at
    or above its first value (see above): a six-digit minibatch loss with 0.1 % noise repeats
    by chance about one time in a hundred, twice in a row about one in 10^4 - and none of the
    tune part's healthy logs nor their variants (thinned, cut, rescaled, rows written again)
    does it at or above its first loss.

Examples
--------
>>> from losswatch.detectors.base import drive
>>> from losswatch.detectors.dead import DeadDetector
>>> from losswatch.detectors.types import Record
>>> losses = [1.5, 1.2345, 1.2345, 1.2345, 1.2345, 1.2345, 1.2345, 1.2345]
>>> [a.message for a in drive(DeadDetector(), [Record(s, x) for s, x in enumerate(losses)])]
['run is dead at step 6: the loss has been 1.23 for 6 records in a row']

References
----------
Keras and PyTorch forum threads "loss stuck at 0.6931 / 2.3026"; SageMaker Debugger's "loss
not decreasing" and "stalled training" rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..base import fmt
from ..copies import each_written, measurements
from ..features import lr_ramping
from ..progress import logged_from_start
from . import Why
from .weights_frozen import exact_repeat

if TYPE_CHECKING:
    from ..dead import DeadDetector
    from ..features import Features

#: Below this a loss printed with four decimals keeps fewer than three significant digits.
COARSE_BELOW = 0.01


def same_4_digits(x: float, prev: float) -> bool:
    """Are two logged losses the same to four significant digits (a frozen print)?

    Not for a value that, printed with four decimals, keeps fewer than three significant digits
    (0 < |x| < 0.01 on the 1e-4 grid): Hugging Face's Trainer rounds the loss it logs to four
    decimals and Keras prints four, so a converged loss of 0.0003 prints the same on every line
    while it still moves by tens of percent. Such a repeat says nothing about a frozen model.
    """
    d = x - prev
    if d < 0.0:
        d = -d
    ax = x if x >= 0.0 else -x
    if ax == 0.0:
        return d == 0.0
    if ax < COARSE_BELOW:
        q = ax * 1e4
        if abs(q - round(q)) <= 1e-6 * q:
            return False  # four decimals of a small loss: two significant digits at most
    return d <= 5e-5 * ax


def new_low(x: float, low: float, scale: float) -> bool:
    """Is ``x`` a new low: below ``low`` by more than half a unit of the fourth significant digit
    of ``scale`` (the level the run sits at)? A stuck value wobbles in its last printed digits; a
    network that learns goes lower than that."""
    return x < low - 5e-5 * scale


def four_significant(x: float) -> bool:
    """Does a logged value keep four significant digits? Not one below 0.1 printed with four
    decimals (0.0523: three), as Keras prints every loss: its repeat is coarser than the
    frozen pair reads."""
    ax = x if x >= 0.0 else -x
    if ax >= 0.1:
        return True
    q = ax * 1e4
    return abs(q - round(q)) > 1e-6 * max(q, 1.0)


#: The most significant digits a logger's rounded print carries (Caffe prints six, Keras and the
#: Trainer four decimals); a float with more is written at full precision.
PRINT_DIGITS = 6


def rounded_print(x: float) -> bool:
    """Is ``x`` a rounded print: four decimals at most (Keras' and the Trainer's prints), or
    ``PRINT_DIGITS`` significant digits at most, up to the float rounding of a unit change
    (0.10097, 6.0097000000000005)? Such a value repeats at that precision while the model
    is frozen; only a float carrying more digits than a print, the same bit for bit, is a copy.
    The number of decimals alone would not do: the same print in other units (a loss summed,
    not averaged; x0.1) has a decimal more or less."""
    q = abs(x) * 1e4
    # a float's rounding of a four-decimal print is ~1e-16 of it: a tolerance relative to q far
    # above that (1e-6 x q) would take any |x| above ~50 for a print whatever its digits
    if q == q and abs(q - round(q)) <= 1e-9 * max(q, 1.0):
        return True
    if not 1e-300 < abs(x) < 1e300:
        return False
    return abs(float(f"{x:.{PRINT_DIGITS}g}") - x) <= 1e-12 * abs(x)


def zero_ok(x: float, f: Features, i: int) -> bool:
    """A frozen 0 is dead only when the run started there (see the module doc)."""
    return x != 0.0 or f.l0[i] == 0.0


def screen(d: DeadDetector, f: Features) -> np.ndarray:
    """The loss rows that may extend a frozen run (a superset of :func:`same_4_digits`)."""
    x = f.a("loss")
    return np.abs(x - f.a("b_lprev")) <= 5e-5 * np.abs(x) * 1.0001 + 1e-300


def _at_chance(v: float, band: float) -> bool:
    from .at_chance import chance_level  # at_chance reads this module's same_4_digits

    return chance_level(v, band) is not None


def never_learned(x: float, first: float, best: float, band: float) -> bool:
    """Was nothing since the first value better than it (beyond ``band``, relative)?"""
    return best >= first - band * abs(first) and x >= first - band * abs(first)


def observe(d: DeadDetector, f: Features, i: int) -> Why | None:
    """On a loss record: extend or break the frozen run; the verdict."""
    x, nl = f.loss[i], measurements(d, f, i)
    if not (nl > 1 and same_4_digits(x, f.b_lprev[i]) and zero_ok(x, f, i)):
        return None  # the run breaks by its record count
    if d.fz_last != nl - 1:
        d.fz_start = nl - 1  # the previous record is the first of the run
    d.fz_last = nl
    n = nl - d.fz_start + 1
    if n >= d.frozen_records:
        return Why(f"the loss has been {fmt(x)} for {n} records in a row{each_written(d)}", x)
    return _exactly_frozen(d, f, i, x, nl)


def _exactly_frozen(d: DeadDetector, f: Features, i: int, x: float, nl: int) -> Why | None:
    """The run of losses the same to six significant digits (:func:`exact_repeat`), begun after
    the first measurement, at or above the first loss; the verdict once ``unlearned_records``
    long."""
    if not exact_repeat(x, f.b_lprev[i]):
        d.fz_xlast = -1
        return None
    if d.fz_xlast != nl - 1:
        d.fz_xmax = max(d.fz_xmax, d.fz_xcur)  # the run before this one ended
        d.fz_xstart = nl - 1
    d.fz_xlast = nl
    n = d.fz_xcur = nl - d.fz_xstart + 1
    # longer than twice any earlier run: a logger's copies repeat each value a bounded number of
    # times, evenly or not (an export merging a loss and an LR logged every 50 and 30 steps,
    # forward-filled: 2, 3, 2, 2, 3 rows a value)
    if n >= d.unlearned_records and n > 2 * d.fz_xmax and d.fz_xstart > 1 and x >= f.l0[i]:
        return Why(f"the loss moved from {fmt(f.l0[i])} to {x:.6g} and has printed that value to six "
                   f"significant digits for {n} records in a row{each_written(d)}", x)
    return None


def evaluation(d: DeadDetector, f: Features, i: int, prev: float) -> Why | None:
    """On an evaluation: extend or break the run of equal validation losses; the verdict. An
    evaluation that moved ends the frozen loss run too (:func:`evaluation_moved`)."""
    v, lok = f.val[i], f.lok[i]
    if evaluation_moved(v, prev):
        d.fz_last = d.fz_xlast = -1
    repeat = same_4_digits(v, prev) and zero_ok(v, f, i)
    if d.v_first != d.v_first:
        d.v_first, d.v_first_step = v, int(f.step[i])
    # the training loss at this evaluation (logged with it, or the last before it) against the one
    # at the evaluation before: both columns frozen together. The same float carrying more
    # digits than a rounded print is a logger's copy (an export that forward-fills its columns to every
    # step), not a new minibatch or epoch mean, which moves in its last digits: such a row is no
    # evaluation of its own and neither extends the runs nor breaks them
    train = f.lprev[i]
    if not (repeat and train == d.vp_train and not rounded_print(train)):
        # the same evaluation while the training loss moved since the one before is a logger
        # repeating its last evaluation, not a frozen model: it breaks the run
        train_moved = train == train and d.vp_train == d.vp_train and not same_4_digits(train, d.vp_train)
        d.v_n = d.v_n + 1 if repeat and not train_moved else 1
        pair = repeat and train == train and not train_moved and four_significant(v) and \
            four_significant(train)
        d.vp_n = d.vp_n + 1 if pair else 1
    d.vp_train = train
    # a logger that repeats the last evaluation on every training line while the training loss
    # moves is not a frozen model; and an evaluation that converged (well below where it
    # started) prints the same 4 digits at the end of a long decay. Where the evaluations begin
    # mid-run (an excerpt, a resumed run) their first value is not where training started and
    # that decay is unseen: four digits cannot tell the two apart there (weights_frozen's six can)
    converged_or_unseen = d.v_first > 0.0 and v < 0.9 * d.v_first or \
        not logged_from_start(d.v_first_step, int(f.step[i]), int(f.nv[i]))
    if d.v_n >= d.frozen_records and not (lok and not same_4_digits(f.loss[i], f.b_lprev[i])) \
            and not converged_or_unseen:
        return Why(f"the validation loss has been {fmt(v)} for {d.v_n} evaluations in a row", v,
                   "val_loss", max(2.0 * d.chance_band * abs(v), 1e-12))
    # a run that sits at ln(k) is the chance rules' (a zero-initialised head prints ln(k) itself
    # at the start); a warm-up still raising the LR has not given the network its LR yet
    if d.vp_n >= d.unlearned_records and never_learned(v, d.v_first, f.vbest[i], d.chance_band) and \
            never_learned(train, f.l0[i], f.rbest[i], d.chance_band) and \
            logged_from_start(d.v_first_step, int(f.step[i]), int(f.nv[i])) and \
            not lr_ramping(f, i) and not _at_chance(v, d.chance_band):
        return Why(f"the validation loss has been {v:.5g} and the training loss {train:.5g} for "
                   f"{d.vp_n} evaluations in a row, neither ever below its first value", v, "val_loss",
                   max(2.0 * d.chance_band * abs(v), 1e-12))
    return None


def evaluation_moved(v: float, prev: float) -> bool:
    """Did the validation loss move since the evaluation before (both finite, not the same four
    significant digits)? The model then changed: a loss that repeats meanwhile is a logger's
    repeat, not a constant output, for :func:`observe`."""
    return prev == prev and v == v and not same_4_digits(v, prev)


def forget(d: DeadDetector) -> None:
    d.fz_last = d.fz_xlast = -1
    d.v_n = 0
    d.vp_n = 0
