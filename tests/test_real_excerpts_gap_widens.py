"""A rise of the validation loss whose epoch's training mean ticked up by less is still a step of
memorisation (the gap between the two losses widened), on a real excerpt from the tune part of
the corpus (bench/real/, provenance in bench/real/SOURCES.md). The holdout part is never read
here."""

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.base import drive
from losswatch.detectors.overfitting import OverfittingDetector
from losswatch.detectors.types import Record

# histories/jerin-tesnim__baby-safety-monitoring-system-__lstm-training-history-csv.csv, rows 0-15
# verbatim (loss, val_loss; a Keras history of an LSTM, one row per epoch). Labelled overfitting
# from row 12: the validation loss is lowest at row 11 (0.4411) and rises on rows 12-15 while
# the training loss falls 0.371 -> 0.321, except on row 12, where the epoch's mean ticked up
# 0.3709 -> 0.3842 (+0.013) while the validation loss rose 0.4411 -> 0.4635 (+0.022).
LSTM_FILE = "histories/jerin-tesnim__baby-safety-monitoring-system-__lstm-training-history-csv.csv"
LSTM = [
    (0, 1.1459585428237915, 0.8852423429489136), (1, 0.7849733233451843, 0.7059242129325867),
    (2, 0.6693673133850098, 0.6104671359062195), (3, 0.6153350472450256, 0.5509223937988281),
    (4, 0.5573651790618896, 0.559865415096283), (5, 0.543840765953064, 0.5409864783287048),
    (6, 0.5061729550361633, 0.5196577906608582), (7, 0.4521482586860657, 0.4864819645881653),
    (8, 0.433639258146286, 0.4991459250450134), (9, 0.43485140800476074, 0.49136242270469666),
    (10, 0.40069034695625305, 0.47608786821365356), (11, 0.3708866834640503, 0.4411237835884094),
    (12, 0.3842177093029022, 0.4635496735572815), (13, 0.3375145196914673, 0.48346129059791565),
    (14, 0.31303682923316956, 0.4898202121257782), (15, 0.32103726267814636, 0.5495887994766235),
]


def _records(rows):
    return [Record(s, x, val_loss=v) for s, x, v in rows]


def test_the_excerpt_is_the_corpus_file_verbatim():
    recs = tune_records(LSTM_FILE)[:len(LSTM)]
    assert [(r.step, r.loss, r.val_loss) for r in recs] == LSTM


def test_a_rise_with_a_smaller_training_tick_up_counts_in_the_run_of_rises():
    alerts = drive(OverfittingDetector(), _records(LSTM))
    assert [(a.step, a.evidence["rule"], a.action.params) for a in alerts] == [
        (14, "steady_rise", {"to_step": 11})]
    assert "0.441 -> 0.464 -> 0.483 -> 0.49" in alerts[0].message


def test_the_engine_warns_on_both_paths():
    recs = _records(LSTM)
    for alerts in (one_at_a_time(recs)[1], in_batches(recs, 5)[1]):
        ov = raised(alerts, "overfitting", "warning")
        assert [(a.step, a.action.type) for a in ov] == [(14, "rollback")]


def test_a_rise_that_the_training_loss_matched_still_breaks_the_run():
    # the same excerpt with row 12's training mean up by more than the validation loss rose
    # (+0.03 against +0.022): an unstable step, not memorisation; the rises after it are two
    rows = LSTM[:12] + [(12, 0.4009, 0.4635496735572815)] + LSTM[13:]
    assert drive(OverfittingDetector(), _records(rows)) == []
