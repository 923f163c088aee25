"""An evaluation of the untrained model: no best to come back to.

Condition: the evaluation is the run's first and it was logged at step 0 or earlier, before any
optimiser step. A validation loss that only rose from there never generalised (a model blown up
by its LR, a broken pipeline): it is not memorising, and the rules stay silent. A first
evaluation logged after training (step >= 1: an epoch log's "epoch 1", a trainer's first
``eval_steps``) is an evaluation of a trained model like any other: a model that overfits from
its first epoch on (a small dataset, a large model) has its best there.

Except in a table of evaluations numbered from 0 (:func:`observe`): every evaluation so far on
the record right after the one before, at a later step. A step column that advances on every
row, each row an evaluation, counts evaluation intervals (Keras numbers epochs from 0 and the
tables of its model cards start at "Epoch 0"; a logger that counts micro-batches or samples
prints the same table with its steps x10 or x32): each row is the result of an interval of
training, so its evaluation is of a trained model. What tells the table is one row per
evaluation, not the size of the stride, which is only the logger's unit, nor its constancy: a
table written every epoch at first and every other one later, or cut into an excerpt at a
coarser stride after its first rows, is the same table (the tune part's GPT-2 model card,
thinned so: epoch 0 read as untrained, and its 50-epoch rise went silent). A log that evaluates
the untrained model at step 0 and goes on training between evaluations (the benchmark, a
trainer's per-step log) has training records between its evaluations and keeps its step-0
evaluation untrained. A table's step-0 row is still the untrained model's where the training
loss printed on it matches its validation loss to ``SAME_WEIGHTS`` (1 %): an evaluation line
prints both losses measured on the same weights (nanoGPT's "step 0: train loss 6.0686, val loss
6.0539"), equal up to the sampling noise of two evaluation sets of one distribution, while an
epoch's row prints the running mean of the epoch's training loss, taken while the model learnt,
beside the evaluation after it. Nor is it a trained model's where the training loss printed with
the second evaluation is above the first row's: the first interval of training raised the
training loss, so the model was blown up from its start (an SGD run at 100x its LR logged every
50th step: training loss 2.38 -> 7.48, validation loss 2.32 -> 8.33), not memorising; a model
that overfits from its first epoch fits its training data better on each epoch. An equal
training loss is the first line written again (a logger that prints each line on two steps in a
row), no sign of a failed first interval. The table's step-0 row must carry a training loss (a
row closing an interval of training logs that interval's training loss): a hand-written loop
that evaluates before it trains and logs that evaluation alone as epoch 0 evaluates the
untrained model.

No detector parameter. ``SAME_WEIGHTS`` 0.01: the tune part's step-0 evaluation lines agree to
0.03-0.5 %, its 15 epoch tables numbered from 0 differ by 2.1-94 % on their first row.

Examples
--------
>>> from losswatch.detectors.overfitting import OverfittingDetector
>>> d = OverfittingDetector()
>>> d.first_step, d.epoch_table = 0, False
>>> is_untrained(d, 0), is_untrained(d, 25)
(True, False)
>>> d.epoch_table = True  # evaluations at steps 0, 10, 20, ... on consecutive records
>>> is_untrained(d, 0)
False

References
----------
The benchmark evaluates at step 0, before the first update (bench/gen_runs.py); Keras epoch
logs and Hugging Face ``log_history`` evaluate after training
(bench/real/issues/lyhue1991__eat_tensorflow2_in_30_days__69__original.csv, provenance in
bench/real/SOURCES.md: validation loss lowest after epoch 1, then rising).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..features import Features
    from ..overfitting import OverfittingDetector


#: The relative difference under which the training and validation loss printed on one row
#: are read as two evaluations of the same weights (see the module doc).
SAME_WEIGHTS = 0.01


def observe(d: OverfittingDetector, f: Features, i: int, step: int) -> None:
    """On an evaluation (before the other rules read it): is the log still a table of
    evaluations, every evaluation one record after the one before and at a later step?"""
    if d.first_step < 0:
        # a row closing an interval of training carries its training loss; an evaluation logged
        # alone at step 0 is a hand-written loop evaluating before it trains
        d.epoch_table = bool(f.lok[i])
        d.first_train = f.lprev[i] if f.lstep[i] == step else math.nan  # logged on its row
        d.first_untrained = bool(abs(d.first_train - f.val[i]) <= SAME_WEIGHTS * abs(f.val[i]))
    else:
        stride = step - d.eval_step
        if d.table_stride <= 0:
            d.table_stride = stride  # the second evaluation: seen (its stride, kept in the state),
            # and whether the first interval of training lowered the training loss
            # (only where this row logs its own training loss: lprev is otherwise an older one)
            d.first_untrained = d.first_untrained or bool(f.lstep[i] == step and f.lprev[i] > d.first_train)
        d.epoch_table = d.epoch_table and f.rec[i] - d.eval_rec == 1 and stride > 0
    d.eval_step = step


def is_untrained(d: OverfittingDetector, best_step: int) -> bool:
    """Is the evaluation at ``best_step`` the first one, made before any training step?"""
    return best_step == d.first_step and best_step <= 0 and (not d.epoch_table or d.first_untrained)
