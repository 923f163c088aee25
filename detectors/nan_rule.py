"""The one NaN rule of losswatch: what a non-finite loss, grad-norm or validation loss means, and
what to do.

Both the detector (:mod:`losswatch.detectors.nan`, inside the service or the local engine) and the
client's in-process check (:mod:`losswatch.client.local`, on the very step, without numpy) call
:func:`classify`, so a NaN gets the same severity and the same action whoever sees it first. The
in-process check passes the training loss and grad-norm only: a non-finite validation loss asks
for no action on the step (a warning), so the detector alone judges it.

WHY here, and standard library only: the rule is detection semantics, so it lives with the
detectors; the client must use it without numpy, so this module imports nothing but the standard
library and the ``losswatch.detectors`` package resolves its numpy-backed names (``Engine``...)
lazily: ``import losswatch.detectors.nan_rule`` does not import numpy.

The rule
--------
* a non-finite loss -> **critical**, roll back to the last finite loss (stop when there never
  was one): the weights after a NaN loss are garbage;
* a non-finite grad-norm with a finite loss:

  - isolated -> **warning**, no action: with fp16 a dynamic loss scaler skips such a step and
    halves its scale, routinely;
  - ``GN_PATIENCE`` records in a row -> **critical**, roll back to before the first of them: the
    scaler is not recovering;
  - with a loss of exactly 0.0 -> **critical** at once: no real loss is exactly 0 while its
    gradient is NaN (an overflow the loss masks out);
  - the first of a run of them, beside a loss ``JUMP`` x or more every loss logged before it ->
    **critical** at once, roll back to the last finite loss before it: a loss scaler's overflow
    is in the scaled gradients and the loss it computed is the run's usual one, and a hard batch
    lifts a loss near its floor 10x (0.02 -> 0.3) but not 10x above anything the run ever
    logged, its untrained start included; such a loss was computed by weights that had already
    blown up (a 7B vision-language fine-tune at 14.7, 14.4, then 8,196 with a NaN grad-norm at
    its third logged step). Not after a non-finite grad-norm on the record before: the scaler
    skipped that update, so the weights are still the ones that logged a usual loss, and the
    jump is the batch's.

* a non-finite validation loss with a finite (or no) training loss -> **warning**, no action,
  however often it repeats: the training step still computes a finite loss, so the weights are
  not known to be broken; what is broken is the evaluation (an fp16/AMP evaluation overflowing,
  typically in the first epochs of a warm-up, or a validation split or loss that cannot be
  computed), and with it early stopping and best-checkpoint selection. Beside a training loss of
  exactly 0.0 it is **critical**, like a NaN grad-norm there: the model's outputs are not finite
  and the 0 is no real loss.
* an episode ends after ``RECOVER`` records in a row with a finite loss (in a log without a
  training loss: a finite validation loss) and no bad grad-norm,
  and not while the last validation loss logged is non-finite (a validation loss is logged far
  less often than the training loss: the episode lasts until an evaluation comes back finite).

Examples
--------
>>> classify(loss=float("nan"), gn_bad=False, gn_in_a_row=0)
NanVerdict(signal='loss', severity='critical', action='rollback')
>>> classify(loss=2.3, gn_bad=True, gn_in_a_row=1)
NanVerdict(signal='grad-norm', severity='warning', action='none')
>>> classify(loss=2.3, gn_bad=True, gn_in_a_row=3).severity
'critical'
>>> classify(loss=0.0, gn_bad=True, gn_in_a_row=1).signal
'zero loss'
>>> classify(loss=8195.8, gn_bad=True, gn_in_a_row=1, loss_top=14.68)
NanVerdict(signal='grad-norm with a loss jump', severity='critical', action='rollback')
>>> classify(loss=2.3, gn_bad=False, gn_in_a_row=0) is None
True
>>> classify(loss=1.98, gn_bad=False, gn_in_a_row=0, val_bad=True)
NanVerdict(signal='validation loss', severity='warning', action='none')
>>> classify(loss=0.0, gn_bad=False, gn_in_a_row=0, val_bad=True).severity
'critical'
"""

from __future__ import annotations

import sys
from collections import namedtuple

__all__ = ["GN_PATIENCE", "RECOVER", "JUMP", "NanVerdict", "classify", "is_bad", "LOSS", "ZERO_LOSS",
           "LOSS_JUMP", "REPEATED_GRAD_NORM", "GRAD_NORM", "VAL_LOSS"]

GN_PATIENCE = 3  # non-finite grad-norms in a row before an fp16 loss scaler counts as lost
RECOVER = 5  # records in a row with finite values before a NaN episode ends
# how many times every loss logged before it a finite loss beside the first of a run of
# non-finite grad-norms must be to say the weights blew up: the divergence rule first_loss's
# multiple of the first loss (in a run that learns, about its highest). In the tune part of the
# real-log corpus the loss beside a NaN grad-norm is 0.9-1.6x the loss before it in each fp16 /
# loss-scaler log (LLM fine-tunes, losses of ~1 and more), 558x every loss before it in the one
# that blew up.
JUMP = 10.0

# what was seen, most serious first (the words the alerts' messages use)
LOSS = "loss"
ZERO_LOSS = "zero loss"
LOSS_JUMP = "grad-norm with a loss jump"
REPEATED_GRAD_NORM = "repeated grad-norm"
GRAD_NORM = "grad-norm"
VAL_LOSS = "validation loss"


# WHY collections, not typing.NamedTuple: typing costs ~3 ms to import and the client imports
# this module when a training script imports losswatch.client
NanVerdict = namedtuple("NanVerdict", ["signal", "severity", "action"])
NanVerdict.__doc__ = """What one record's non-finite value means: ``signal`` (one of the names
above), ``severity`` ("warning" or "critical") and the ``action`` type ("none" or "rollback"; a
rollback with no finite loss to return to is the caller's "stop")."""


def is_bad(v: float | None) -> bool:
    """True for NaN or +-inf (None, not logged, is not bad). A subtraction, no function call:
    ``inf - inf`` and ``nan - nan`` are both NaN."""
    return v is not None and v - v != 0.0


def classify(loss: float | None, gn_bad: bool, gn_in_a_row: int,
             gn_patience: int = GN_PATIENCE, val_bad: bool = False,
             loss_top: float | None = None) -> NanVerdict | None:
    """The verdict for one record, or None when nothing in it is non-finite.

    Parameters
    ----------
    loss : float or None
        The record's loss (None: not logged, or not known yet).
    gn_bad : bool
        The record's grad-norm is NaN/inf.
    gn_in_a_row : int
        How many records in a row, this one included, had a non-finite grad-norm.
    gn_patience : int
    val_bad : bool
        The record's validation loss is NaN/inf.
    loss_top : float or None
        The highest finite loss logged before this record (None or NaN: none, or not known).
    """
    if is_bad(loss):
        return NanVerdict(LOSS, "critical", "rollback")
    if not gn_bad and not val_bad:
        return None
    if loss == 0.0:
        return NanVerdict(ZERO_LOSS, "critical", "rollback")
    if not gn_bad:
        return NanVerdict(VAL_LOSS, "warning", "none")
    if gn_in_a_row == 1 and loss is not None and loss_top is not None and loss_top >= sys.float_info.min and \
            loss >= JUMP * loss_top:
        return NanVerdict(LOSS_JUMP, "critical", "rollback")
    if gn_in_a_row >= gn_patience:
        return NanVerdict(REPEATED_GRAD_NORM, "critical", "rollback")
    return NanVerdict(GRAD_NORM, "warning", "none")
