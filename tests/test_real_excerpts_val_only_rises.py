"""Three rises of the validation loss with no training loss logged are not yet a trend, on a
real excerpt from the tune part of the corpus (bench/real/, provenance in bench/real/SOURCES.md).
The holdout part is never read here."""

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.base import drive
from losswatch.detectors.overfitting import OverfittingDetector
from losswatch.detectors.types import Record

# histories/wenxin-jiang__cs577-nlp__model-card-shaier-distilbert-continued-training-medqa.csv,
# its first 8 rows verbatim (a Hugging Face model card's table: continued training of a
# distilbert checkpoint on MedQA, evaluated every epoch of 333 steps; the training loss is
# "No log" until step 2,664). Labelled healthy: the validation loss is noisy between 0.29 and
# 0.60 around a flat ~0.42 for all 220 epochs. After a low draw at step 999 it rises three
# times (0.4083, 0.4134, 0.5093), then falls back.
CARD = [
    (333, None, 0.4516), (666, None, 0.4277), (999, None, 0.3734), (1332, None, 0.4083),
    (1665, None, 0.4134), (1998, None, 0.5093), (2331, None, 0.4639), (2664, 0.4564, 0.5132),
]
CARD_FILE = "histories/wenxin-jiang__cs577-nlp__model-card-shaier-distilbert-continued-training-medqa.csv"


def _records(rows):
    return [Record(s, x, val_loss=v) for s, x, v in rows]


def test_three_rises_without_a_training_loss_are_no_overfitting():
    assert drive(OverfittingDetector(), _records(CARD)) == []


def test_the_excerpt_is_the_corpus_file_verbatim():
    recs = tune_records(CARD_FILE)[:len(CARD)]
    assert [(r.step, r.loss, r.val_loss) for r in recs] == CARD


def test_no_engine_alarm_that_rolls_back_on_the_whole_card():
    recs = tune_records(CARD_FILE)
    alerts = raised(one_at_a_time(recs)[1], min_severity="warning")
    assert [a for a in alerts if a.kind == "overfitting"] == []


def test_a_fourth_rise_is_the_trend():
    # the same excerpt, the evaluation after the third rise higher again instead of falling back
    rows = CARD[:6] + [(2331, None, 0.5639)]
    alerts = drive(OverfittingDetector(), _records(rows))
    assert [(a.step, a.evidence["rule"], a.action.params) for a in alerts] == [
        (2331, "steady_rise", {"to_step": 999})]
    assert "(no training loss logged)" in alerts[0].message


def test_with_the_training_loss_falling_three_rises_still_do():
    # every evaluation with a training loss that falls at each: the two signals together
    rows = [(s, 0.9 - 0.05 * k, v) for k, (s, _, v) in enumerate(CARD[:6])]
    alerts = drive(OverfittingDetector(), _records(rows))
    assert [(a.step, a.evidence["rule"]) for a in alerts] == [(1998, "steady_rise")]


def test_both_paths_agree():
    recs = _records(CARD[:6] + [(2331, None, 0.5639)])
    ref = [(a.id, a.event, a.severity, a.message) for a in one_at_a_time(recs)[1]]
    for size in (1, 2, 100):
        assert [(a.id, a.event, a.severity, a.message) for a in in_batches(recs, size)[1]] == ref
