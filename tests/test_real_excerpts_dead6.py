"""Dead runs in short thread pastes, where the strength of the evidence, not the number of rows,
tells: verbatim logs of the tune part of the corpus (bench/real/, provenance in
bench/real/SOURCES.md). The holdout part is never read here.

- the training loss and its evaluation both within 0.05 % of the same ln(k) on the same rows
  (two, three from a first loss at chance, one late in training):
  :mod:`losswatch.detectors.dead_rules.at_chance`.
"""

from dataclasses import replace

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.types import Record

# issues/srviest__char-cnn-text-classification-pytorch__3.csv: a 4-class char-CNN, the one pasted
# line of epoch 30, batch 2400: loss 1.386194, evaluation 1.386315 (ln 4 = 1.386294). Dead, onset 2400.
SRVIEST = "issues/srviest__char-cnn-text-classification-pytorch__3.csv"

# histories/cuperido__facerecognitionai__readme-md-tensorflow-model-v1.csv: a binary face
# classifier whose loss went 49.36 -> 0.6955 -> 0.6933, 0.6932 with val_loss 0.6932 at steps 19
# and 20 (ln 2 = 0.6931). Label lr_too_high (its stop counts: the LR must come down).
CUPERIDO = "histories/cuperido__facerecognitionai__readme-md-tensorflow-model-v1.csv"


def _dead(recs):
    return [(a.step, a.action.type) for a in raised(one_at_a_time(recs)[1], "dead", "warning")]


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
