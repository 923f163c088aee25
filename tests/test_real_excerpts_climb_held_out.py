"""A slow climb of an epoch log's training loss that its evaluations confirm, on a verbatim log
of the tune part of the corpus (bench/real/, provenance in bench/real/SOURCES.md). The holdout
part is never read here. :mod:`losswatch.detectors.divergence_rules.climb`."""

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.types import Record

# histories/markdeng86__volatilitypredictiondeeplearning__training-history-csv.csv: a CNN
# regressor of realised volatility, 19 epochs: the training loss falls 2.58 -> 0.0609 (epoch 13)
# and then rises on each of six epochs to 0.554 while the validation loss goes 0.0604 -> 0.0759,
# 0.111, 0.328, 0.331, 0.727, 0.181. Label divergence_slow, onset 14.
VOLATILITY = "histories/markdeng86__volatilitypredictiondeeplearning__training-history-csv.csv"


def test_a_climb_that_undoes_a_fifth_of_the_progress_is_told_when_the_evaluations_are_far_above_their_best():
    recs = tune_records(VOLATILITY)
    for alerts in (one_at_a_time(recs)[1], in_batches(recs, 4)[1]):
        got = raised(alerts, "divergence", "warning")
        assert [(a.step, a.evidence["rule"], a.action.params["factor"]) for a in got] == [(19, "climb", 0.1)]
        assert "with the validation loss at 0.181, 2.99x its best" in got[0].message


def test_the_same_climb_with_evaluations_near_their_best_stays_a_question_of_the_level():
    # the evaluations of the climbing epochs at 1.3x the best: not confirmed, and the climb
    # (a fifth of the progress) is under the level bar
    recs = [Record(r.step, r.loss, val_loss=None if r.val_loss is None else
                   (r.val_loss if r.step <= 13 else 0.0604 * 1.3)) for r in tune_records(VOLATILITY)]
    assert raised(one_at_a_time(recs)[1], "divergence") == []
