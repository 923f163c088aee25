"""Overfitting's training-loss guard in epoch logs, on real logs from the tune part of the corpus
(bench/real/, provenance in bench/real/SOURCES.md): memorisation is a training loss that keeps
falling far outside its own noise while the validation loss rises; a converged run whose two
losses both wander around their floors is not memorising. The holdout part is never read here."""

from detector_helpers import in_batches, one_at_a_time, raised, tune_records

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
    # a slow creep caught by drift once its training loss fell past its noise (510 before)
    first = _overfitting(OVERFIT_CSV)[:1]
    assert first and first[0][1] == "drift" and 140 <= first[0][0] <= 600


def test_both_paths_agree():
    for rel in (KERAS_MRI, IRFANET, GMM):
        recs = tune_records(rel)
        ref = [(a.id, a.event, a.severity, a.message) for a in one_at_a_time(recs)[1]]
        for size in (1, 7, 64):
            assert [(a.id, a.event, a.severity, a.message) for a in in_batches(recs, size)[1]] == ref, (rel, size)
