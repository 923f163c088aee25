"""Dead runs in short thread pastes, where the strength of the evidence, not the number of rows,
tells: verbatim logs of the tune part of the corpus (bench/real/, provenance in
bench/real/SOURCES.md). The holdout part is never read here.

- the same validation loss, printed with five significant digits or more, on three separate
  evaluations in a row: :mod:`losswatch.detectors.dead_rules.weights_frozen`;
- the training loss and its evaluation both within 0.05 % of the same ln(k) on the same rows
  (two, three from a first loss at chance, one late in training):
  :mod:`losswatch.detectors.dead_rules.at_chance`.
"""

from dataclasses import replace

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.types import Record

# issues/keras-team__keras__4171.csv (its training loss and evaluation interleaved in a test): a Keras MLP, binary cross-entropy, three epoch lines:
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


def test_three_epoch_lines_with_the_same_five_digit_evaluation_are_not_enough_alone():
    # the keras 4171 paste: val_loss 6.9442 on three epochs, the training loss 7.1742, 7.1726,
    # 7.1726. A frozen sigmoid to the eye, but each row alone reads as a logger's repeat (the
    # evaluation again while the training loss moved; then a whole line written again), and
    # the variants of healthy logs written 4 times show such starts: not told on three rows
    recs = tune_records(KERAS_4171)
    assert _dead(recs) == []
    # with separate evaluations (a row without one between them) the same prints are three
    # evaluations of their own
    apart = [Record(2 * r.step + j, r.loss + 0.003 * (1 - j), val_loss=r.val_loss if j else None)
             for r in recs for j in (0, 1)]
    # (flat_start's thin-evidence warning comes first; the third evaluation gives it the stop)
    got = [a for a in one_at_a_time(apart)[1] if a.kind == "dead" and a.action.type == "stop"]
    assert got and got[0].last_step == 7 and "6.9442 on 3 separate evaluations" in got[0].message
    # two are not: two healthy logs of the tune part repeat a five-digit evaluation once
    assert [a for a in one_at_a_time(apart[:4])[1] if a.action.type == "stop"] == []
    # a four-digit print repeats while the model still moves (a converged 0.5956): frozen judges it
    coarse = [replace(r, val_loss=0.6944 if r.val_loss else None) for r in apart]
    assert [a for a in one_at_a_time(coarse)[1] if a.action.type == "stop"] == []
    # evaluations well below the first (0.9 x): a converged run whose LR a schedule cut
    converged = [Record(0, 9.0, val_loss=9.0)] + [replace(r, step=r.step + 1) for r in apart]
    assert [a for a in one_at_a_time(converged)[1] if a.action.type == "stop"] == []


def test_evaluations_that_change_on_every_row_make_a_repeat_an_evaluation():
    # a table of evaluations (one a row, each new) that then repeats one five-digit value while
    # the training loss still wobbles: each row is an evaluation of its own
    vals = [3.5122, 3.4107, 3.3986, 3.3973, 3.3973, 3.3973]
    recs = [Record(500 * (k + 1), 3.42 + 0.01 * (k % 2), val_loss=v) for k, v in enumerate(vals)]
    assert _dead(recs) == [(3000, "stop")]
    assert _dead(recs[:5]) == []
    # the same rows each written four times (a logger's copies): the repeats are copies
    x4 = [replace(r, step=4 * r.step + j) for r in recs[:4] for j in range(4)]
    assert _dead(x4) == []


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
    at_init = [Record(k, x, val_loss=0.6932) for k, x in enumerate((0.6932, 0.6931, 0.6933))]
    assert _dead(at_init[:2]) == []
    assert _dead(at_init) == [(2, "stop")]
    # the same line written again is no row of its own
    assert _dead([Record(k, 0.6932, val_loss=0.6932) for k in range(3)]) == []


def test_both_paths_agree():
    for rel in (SRVIEST, CUPERIDO):
        recs = tune_records(rel)
        ref = [(a.id, a.event, a.message) for a in one_at_a_time(recs)[1]]
        assert ref
        for size in (1, 2, 100):
            assert [(a.id, a.event, a.message) for a in in_batches(recs, size)[1]] == ref, (rel, size)
