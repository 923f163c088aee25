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
