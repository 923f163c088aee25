"""An evaluation of the untrained model: no best to come back to.

Condition: the evaluation is the run's first and it was logged at step 0 or earlier, before any
optimiser step. A validation loss that only rose from there never generalised (a model blown up
by its LR, a broken pipeline): it is not memorising, and the rules stay silent. A first
evaluation logged after training (step >= 1: an epoch log's "epoch 1", a trainer's first
``eval_steps``) is an evaluation of a trained model like any other: a model that overfits from
its first epoch on (a small dataset, a large model) has its best there.

No parameter.

Examples
--------
>>> from losswatch.detectors.overfitting import OverfittingDetector
>>> d = OverfittingDetector()
>>> d.first_step = 0
>>> is_untrained(d, 0), is_untrained(d, 25)
(True, False)

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
    from ..overfitting import OverfittingDetector


def is_untrained(d: OverfittingDetector, best_step: int) -> bool:
    """Is the evaluation at ``best_step`` the first one, made before any training step?"""
    return best_step == d.first_step and best_step <= 0
