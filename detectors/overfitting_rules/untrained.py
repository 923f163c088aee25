"""An evaluation of the untrained model: no best to come back to.

Condition: the evaluation is the run's first and it was logged at step 0 or earlier, before any
optimiser step. A validation loss that only rose from there never generalised (a model blown up
by its LR, a broken pipeline): it is not memorising, and the rules stay silent. A first
evaluation logged after training (step >= 1: an epoch log's "epoch 1", a trainer's first
``eval_steps``) is an evaluation of a trained model like any other: a model that overfits from
its first epoch on (a small dataset, a large model) has its best there.

Except in a table of epochs numbered from 0 (:func:`observe`): every evaluation so far on the
record right after the one before and one step after it. No trainer evaluates after every
optimiser step; a step column that advances by one per evaluated record counts epochs (Keras
numbers them from 0, and the tables of its model cards start at "Epoch 0"), and each row is the
result of an epoch of training: its evaluation is of a trained model. A log that evaluates the
untrained model at step 0 and then every N steps (the benchmark, nanoGPT's eval lines) has
steps N apart. The table's step-0 row must carry a training loss (an epoch's row logs the
training loss of the epoch it closes): a hand-written loop that evaluates before it trains and
logs that evaluation alone as epoch 0 evaluates the untrained model.

No parameter.

Examples
--------
>>> from losswatch.detectors.overfitting import OverfittingDetector
>>> d = OverfittingDetector()
>>> d.first_step, d.epoch_table = 0, False
>>> is_untrained(d, 0), is_untrained(d, 25)
(True, False)
>>> d.epoch_table = True  # evaluations at steps 0, 1, 2, ... on consecutive records
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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..features import Features
    from ..overfitting import OverfittingDetector


def observe(d: OverfittingDetector, f: Features, i: int, step: int) -> None:
    """On an evaluation (before the other rules read it): is the log still a table of epochs,
    every evaluation one record and one step after the one before?"""
    if d.first_step < 0:
        # an epoch's row carries the training loss of the epoch it closes; an evaluation logged
        # alone at step 0 is a hand-written loop evaluating before it trains
        d.epoch_table = bool(f.lok[i])
    else:
        d.epoch_table = d.epoch_table and f.rec[i] - d.eval_rec == 1 and step - d.eval_step == 1
    d.eval_step = step


def is_untrained(d: OverfittingDetector, best_step: int) -> bool:
    """Is the evaluation at ``best_step`` the first one, made before any training step?"""
    return best_step == d.first_step and best_step <= 0 and not d.epoch_table
