"""Dead runs in short thread pastes, where the strength of the evidence, not the number of rows,
tells: verbatim logs of the tune part of the corpus (bench/real/, provenance in
bench/real/SOURCES.md). The holdout part is never read here.

- the same validation loss, printed with five significant digits or more, on three evaluations
  in a row: :mod:`losswatch.detectors.dead_rules.weights_frozen`;
- the training loss and its evaluation both within 0.05 % of the same ln(k) on the same rows
  (two, three from a first loss at chance, one late in training):
  :mod:`losswatch.detectors.dead_rules.at_chance`.
"""

from dataclasses import replace

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.types import Record

# issues/keras-team__keras__4171.csv: a Keras MLP, binary cross-entropy, three epoch lines:
# loss 7.1742, 7.1726, 7.1726, val_loss 6.9442 on every epoch (a saturated sigmoid). Dead, onset 2.
KERAS_4171 = "issues/keras-team__keras__4171.csv"

# issues/srviest__char-cnn-text-classification-pytorch__3.csv: a 4-class char-CNN, the one pasted
# line of epoch 30, batch 2400: loss 1.386194, evaluation 1.386315 (ln 4 = 1.386294). Dead, onset 2400.
SRVIEST = "issues/srviest__char-cnn-text-classification-pytorch__3.csv"

# histories/cuperido__facerecognitionai__readme-md-tensorflow-model-v1.csv: a binary face
# classifier whose loss went 49.36 -> 0.6955 -> 0.6933, 0.6932 with val_loss 0.6932 at steps 19
# and 20 (ln 2 = 0.6931). Label lr_too_high (its stop counts: the LR must come down).
CUPERIDO = "histories/cuperido__facerecognitionai__readme-md-tensorflow-model-v1.csv"


def _dead(recs):
    return [(a.step, a.action.type) for a in raised(one_at_a_time(recs)[1], "dead", "warning")]


def test_the_same_five_digit_evaluation_on_three_epochs_is_dead():
    recs = tune_records(KERAS_4171)
    got = raised(one_at_a_time(recs)[1], "dead", "warning")
    assert [(a.step, a.action.type) for a in got] == [(3, "stop")]
    assert "6.9442 on 3 separate evaluations" in got[0].message
    # two epochs are not enough: two healthy logs of the tune part repeat a five-digit evaluation once
    assert _dead(recs[:2]) == []


def test_a_repeated_evaluation_that_could_be_a_copy_or_a_coarse_print_is_not_dead():
    recs = tune_records(KERAS_4171)
    # a four-digit print repeats while the model still moves (a converged 0.5956): frozen judges it
    assert _dead([replace(r, val_loss=0.6944) for r in recs]) == []
    # the training loss moving on every row and the evaluation the same from the first row: a
    # logger that repeats its last evaluation on each line reads so
    moving = [replace(r, loss=7.1742 - 0.01 * k) for k, r in enumerate(recs)]
    assert _dead(moving) == []
    # a training loss the same float with more digits than a print is a copy of the line
    copied = [replace(r, loss=7.174212345678) for r in recs]
    assert _dead(copied) == []
    # evaluations well below the first (0.9 x): a converged run whose LR a schedule cut
    converged = [Record(0, 9.0, val_loss=9.0)] + [replace(r, step=r.step) for r in recs]
    assert _dead(converged) == []


def test_evaluations_that_change_on_every_row_make_a_repeat_an_evaluation():
    # a table of evaluations (one a row, each new) that then repeats one five-digit value while
    # the training loss still wobbles: each row is an evaluation of its own
    vals = [3.5122, 3.4107, 3.3986, 3.3973, 3.3973, 3.3973]
    recs = [Record(500 * (k + 1), 3.42 + 0.01 * (k % 2), val_loss=v) for k, v in enumerate(vals)]
    assert _dead(recs) == [(3000, "stop")]
    assert _dead(recs[:5]) == []


def test_the_loss_and_its_evaluation_at_ln_4_late_in_training_are_dead_on_one_row():
    recs = tune_records(SRVIEST)
    got = raised(one_at_a_time(recs)[1], "dead", "warning")
    assert [(a.step, a.action.type) for a in got] == [(2400, "stop")]
    assert "ln(4)" in got[0].message
    # the same row at the first step is the initialisation's: not judged on one row
    assert _dead([replace(recs[0], step=1)]) == []
    # one stream alone, or the two 0.1 % apart from ln 4, is not enough on one row
    assert _dead([replace(recs[0], val_loss=None)]) == []
    assert _dead([replace(recs[0], val_loss=1.3877)]) == []


def test_the_loss_and_its_evaluation_at_ln_2_on_two_rows_after_another_level_are_dead():
    recs = tune_records(CUPERIDO)
    assert _dead(recs) == [(20, "stop")]
    assert _dead(recs[:3]) == []
    # from a first loss at chance (an initialisation), a row more
    at_init = [Record(k, 0.6932, val_loss=0.6932) for k in range(3)]
    assert _dead(at_init[:2]) == []
    assert _dead(at_init) == [(2, "stop")]


def test_both_paths_agree():
    for rel in (KERAS_4171, SRVIEST, CUPERIDO):
        recs = tune_records(rel)
        ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
        assert ref
        for size in (1, 2, 100):
            assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, (rel, size)
