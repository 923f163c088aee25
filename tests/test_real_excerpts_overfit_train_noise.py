"""Overfitting's training-loss guard in epoch logs, on real logs from the tune part of the corpus
(bench/real/, provenance in bench/real/SOURCES.md): memorisation is a training loss that keeps
falling far outside its own noise while the validation loss rises; a converged run whose two
losses both wander around their floors is not memorising. The holdout part is never read here."""

import math
import random

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.types import Record

# healthy (SOURCES.md, each "label: healthy"): all three were warned "overfitting, rollback"
KERAS_MRI = "histories/akashkalasagond__alzheimer-disease-dementia-classification-__training-history-csv.csv"
DOGS_CATS = "histories/benbradshaww__dogs_vs_cats__history-history-csv.csv"
GMM = "histories/duccioo__gaussian-mixture-neural-network__lightning-logs-version-0-metrics-csv.csv"
# overfitting (SOURCES.md): caught before, and still
IRFANET = "histories/ahmedimtiazprio__irfanet-10__training-191017-log.csv"  # onset epoch 16
DISCHARGE = "histories/10sajan10__cs6994finalproject__lightning-logs-discharge-version-4-metrics-csv.csv"  # onset 2279
OVERFIT_CSV = "histories/christerknorborg__deep-learning__overfit-csvs-model2fixed-csv.csv"  # onset 140


def _overfitting(rel):
    return [(a.step, a.evidence["rule"]) for a in raised(one_at_a_time(tune_records(rel))[1], "overfitting", "warning")]


def test_a_converged_run_whose_training_loss_wanders_as_much_as_its_validation_loss_is_not_memorising():
    # Keras history, 100 epochs: val 0.039-0.085 around ~0.045 from epoch 38 on, train 0.01-0.04.
    # Epochs 50-52 (val 0.069, 0.050, 0.073) held the smoothed val 54 % above its best (0.041 at
    # epoch 43) "while the training loss fell 0.62 -> 0.52": the ~50-record trend, still carrying
    # epoch 0's 1.27. The training level at the evaluations went 0.033 -> 0.023, 2.5x its noise.
    assert _overfitting(KERAS_MRI) == []


def test_a_trend_still_falling_from_the_first_epochs_is_not_the_training_loss_now():
    # 148 epochs: val 0.029-0.030 at epochs 121-124, then 0.034, 0.037, 0.043, 0.038, 0.042 and
    # back to 0.029 at epoch 133; the training loss logged with them rose 0.022 -> 0.031 while the
    # trend "fell 0.14 -> 0.129". Warned at epoch 129 before.
    assert _overfitting(DOGS_CATS) == []


def test_a_validation_creep_at_its_floor_with_a_flat_noisy_training_loss_is_not_a_drift():
    # Lightning CSVLogger, 700 epochs: the training loss is one minibatch every 5th epoch,
    # 0.0002-0.003 with no trend after epoch 300; the val loss's dips back up (epochs 207-213,
    # 0.0011) were held_above at step 2149 and its creep 0.00037 -> 0.00045 at its floor was a
    # drift at step 6349 (both before: the line's 0.8x fall was one noisy minibatch).
    assert _overfitting(GMM) == []


def test_memorising_epoch_logs_are_still_caught():
    # IrfaNet: val 0.69 at epoch 15 -> 1.26 at 24 -> 1.95, train 0.43 -> 0.18 (24x its noise)
    assert _overfitting(IRFANET)[:1] == [(24, "held_above")]
    # Lightning, 16 evaluations: val 0.314 -> 0.50-0.70, train 0.264 -> 0.213 smoothly (6.8x)
    assert _overfitting(DISCHARGE)[:1] == [(2735, "held_above")]
    # a slow creep caught by drift once its training loss fell past its noise (510 before the
    # guard: 20 epochs later)
    assert _overfitting(OVERFIT_CSV)[:1] == [(530, "drift")]


def test_both_paths_agree():
    for rel in (KERAS_MRI, IRFANET, GMM, DOGS_CATS, DISCHARGE, OVERFIT_CSV):
        recs = tune_records(rel)
        ref = [(a.id, a.event, a.severity, a.message) for a in one_at_a_time(recs)[1]]
        for size in (1, 7, 64):
            assert [(a.id, a.event, a.severity, a.message) for a in in_batches(recs, size)[1]] == ref, (rel, size)


def _epochs(train, val):
    recs = [Record(e, t, val_loss=v) for e, (t, v) in enumerate(zip(train, val))]
    return [(a.step, a.evidence["rule"]) for a in raised(one_at_a_time(recs)[1], "overfitting", "warning")]


def test_a_short_memorising_epoch_log_is_caught_though_its_first_epochs_descend_steeply():
    # (constructed, 12 epochs, no noise) the training loss descends 1.9 -> 0.35 in 6 epochs and
    # then falls 0.008 an epoch; the validation loss is best at epoch 7 and then 35-45 % above.
    # A 10-row noise average there is the descent's bends (0.05), not noise: the fall since the
    # best (0.345 -> 0.312) read as inside it and the run was never warned; the noise is now
    # read around the best, where a steady fall does not bend.
    train = [1.9, 0.94382, 0.587, 0.45068, 0.39547, 0.37011, 0.35572, 0.34537, 0.3365, 0.32819,
             0.32007, 0.31203]
    val = [1.0, 0.75671, 0.6318, 0.56767, 0.53474, 0.51784, 0.50916, 0.5047, 0.73182, 0.68135,
           0.73182, 0.68135]
    assert _epochs(train, val) == [(11, "held_above")]


def test_a_training_loss_printed_to_four_decimals_does_not_fall_by_one_rounding_step():
    # (constructed, as a Keras history printed with 4 decimals) the training loss sits at 0.0011
    # for 30 epochs and then prints 0.0010: one print quantum, no measured noise since the best
    # (epoch 76); the validation loss wanders 0.044-0.056 after its best of 0.036. The quantum
    # read as a fall of 0.0001 > 3 x 0 and was held_above at epoch 82.
    train = [round(0.3 * math.exp(-e / 2) + 0.0011, 4) for e in range(90)]
    train = [0.0010 if e >= 80 else x for e, x in enumerate(train)]
    r = random.Random(3)
    val = [0.05 + r.uniform(-0.006, 0.006) for _ in range(90)]
    val[76], val[77] = 0.036, 0.037
    for e in range(78, 90):
        val[e] = 0.052 + 0.004 * (-1) ** e
    assert _epochs(train, val) == []


def test_an_epoch_log_written_as_a_few_noisy_lines_per_epoch_reads_the_training_level_too():
    # KERAS_MRI with each epoch written as 3 training lines (the epoch's loss x (1 + 10 % noise),
    # the evaluation on the last): 3 records per evaluation read the ~50-record trend, which still
    # carries the first epochs' descent, and alarmed on 10 of 10 noise seeds (held_above)
    recs = tune_records(KERAS_MRI)
    lines = []
    r = random.Random(0)
    for j, rec in enumerate(recs):
        for q in range(3):
            lines.append(Record(3 * j + q, rec.loss * (1 + r.gauss(0, 0.1)),
                                val_loss=rec.val_loss if q == 2 else None))
    assert raised(one_at_a_time(lines)[1], "overfitting", "warning") == []


def test_a_state_saved_before_the_noise_around_the_best_drops_its_one_line_training_loss():
    from losswatch.detectors.base import drive
    from losswatch.detectors.overfitting import OverfittingDetector
    first = OverfittingDetector()
    drive(first, [Record(e, 1.0 - 0.05 * e, val_loss=1.0 - 0.05 * e) for e in range(8)])
    old = {k: v for k, v in first.get_state().items() if k not in ("tl1", "tl2", "tsum", "tn", "tq", "tlow", "tpre")}
    second = OverfittingDetector()
    second.set_state(old)
    assert first.train_at_best == first.train_at_best and second.train_at_best != second.train_at_best
