"""A log of evaluations only whose evaluations jump and come back, on a verbatim log of the tune
part of the corpus (bench/real/, provenance in bench/real/SOURCES.md). The holdout part is never
read here.

:mod:`losswatch.detectors.divergence_rules.val_blowup` calls an evaluation at 2x its best and
above the first evaluation a lost run at once; where a jump of the run already came back on the
next evaluation, it waits for the evaluation after the jump.
"""

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.types import Record

# issues/bubbliiiing__yolov4-keras__76.csv: "val_loss is hugely larger at some epochs", eleven
# consecutive Keras epochs of a YOLOv4 (no training loss given): 2.33, 46.5, 2.04, 72.3, 1.93,
# 15.2, 1.98, 1934, 1.67, 1.48, 2.31. Label spike (onset 1; also 3, 5, 7).
YOLO = "issues/bubbliiiing__yolov4-keras__76.csv"


def _evals(vals):
    return [Record(s, None, val_loss=v) for s, v in enumerate(vals)]


def test_evaluations_that_jump_and_come_back_each_time_are_spikes_not_a_lost_run():
    recs = tune_records(YOLO)
    for alerts in (one_at_a_time(recs)[1], in_batches(recs, 4)[1]):
        assert raised(alerts, "divergence") == []
        spikes = raised(alerts, "spike")
        assert {1, 3} <= {a.step for a in spikes}
        assert all(a.severity != "critical" for a in raised(alerts))


def test_a_jump_that_holds_after_one_came_back_is_a_lost_run_one_evaluation_later():
    vals = [r.val_loss for r in tune_records(YOLO)][:4] + [70.0, 90.0]  # 72.3 then 70 and 90: held
    got = raised(one_at_a_time(_evals(vals))[1], "divergence", "critical")
    assert [(a.step, a.evidence["rule"]) for a in got] == [(4, "val_lost")]
    assert "for a second evaluation" in got[0].message


def test_without_a_jump_that_came_back_the_first_jump_is_a_lost_run_at_once():
    got = raised(one_at_a_time(_evals([2.33, 2.2, 2.04, 72.3, 1.93]))[1], "divergence", "critical")
    assert [(a.step, a.evidence["rule"]) for a in got] == [(3, "val_lost")]
