"""A validation loss that jumps again and again, on real excerpts from the tune part of the
corpus (bench/real/, provenance in bench/real/SOURCES.md): one jump is an evaluation event (a
note), the third in a run is an LR too high for the valley (a warning that lowers the LR). The
holdout part is never read here."""

import json
from pathlib import Path

from detector_helpers import in_batches, in_tune_part, one_at_a_time, raised, tune_records
from losswatch.detectors import Engine
from losswatch.detectors.base import drive
from losswatch.detectors.types import Record
from losswatch.detectors.val_spike import ValSpikeDetector

REAL = Path(__file__).resolve().parent.parent / "bench" / "real"

JUMPY = "issues/stats-stackexchange__questions__478017.csv"  # val 0.58 -> 2.30, 0.17 -> 1.52, 0.14 -> 2.81


def _records(rel: str):
    return tune_records(rel)


def test_the_third_jump_of_the_validation_loss_lowers_the_lr():
    alerts = [a for a in one_at_a_time(_records(JUMPY))[1] if a.detector == "val_spike"]
    first = raised(alerts)
    assert [(a.step, a.severity, a.action.type) for a in first] == [
        (6, "info", "none"), (8, "info", "none"), (10, "warning", "scale_lr")]
    assert first[-1].action.params["factor"] == 0.5
    assert first[-1].message.startswith("LR too high: the validation loss jumped to 2.81 at step 10")
    assert "3 jumps" in first[-1].message


def test_both_paths_and_a_saved_engine_agree_on_the_count():
    recs = _records(JUMPY)
    ref = [(a.id, a.event, a.severity, a.message) for a in one_at_a_time(recs)[1]]
    for size in (1, 3, 100):
        assert [(a.id, a.event, a.severity, a.message) for a in in_batches(recs, size)[1]] == ref, size
    eng, head = one_at_a_time(recs[:7])
    eng = Engine.from_bytes(eng.to_bytes())
    tail = [a for r in recs[7:] for a in eng.update(r)]
    assert [(a.id, a.event, a.severity, a.message) for a in head + tail] == ref


def test_no_healthy_tune_log_gets_an_lr_change_from_its_validation_jumps():
    labels = json.loads((REAL / "LABELS.json").read_text())
    healthy = [rel for rel, lab in labels.items() if lab["label"] == "healthy" and in_tune_part(rel)]
    assert len(healthy) >= 20
    for rel in healthy:
        out = drive(ValSpikeDetector(), _records(rel))
        assert [a for a in out if a.action.type != "none"] == [], rel


def test_two_jumps_stay_notes():
    vals = [1.0, 0.5, 1.2, 0.4, 0.9, 0.35, 0.3]
    recs = [Record(s, 1.0 - 0.05 * s, val_loss=v) for s, v in enumerate(vals)]
    assert {a.severity for a in drive(ValSpikeDetector(), recs)} == {"info"}


SWEEP = "issues/wandb__senpai__pr2583__lr1e-3.csv"  # evaluations only: 235 -> 127, then 377


def test_an_evaluation_only_log_back_above_its_first_evaluation_is_diverging():
    recs = _records(SWEEP)
    div = raised(one_at_a_time(recs)[1], "divergence")
    assert [(a.step, a.severity, a.evidence["rule"]) for a in div] == [(9, "critical", "val_lost")]
    assert div[0].action.type == "scale_lr" and div[0].action.params["factor"] < 1
    assert "above its first evaluation (235)" in div[0].message
    for size in (2, 100):
        assert raised(in_batches(recs, size)[1], "divergence") == div, size


def test_an_evaluation_only_log_that_rises_below_its_start_or_with_a_training_loss_is_not():
    from losswatch.detectors.divergence import DivergenceDetector
    vals = [300.0, 194.0, 170.0, 150.0, 136.0, 127.0, 140.0, 200.0, 260.0]  # 2x its best, below the first
    assert drive(DivergenceDetector(), [Record(s, None, val_loss=v) for s, v in enumerate(vals)]) == []
    # with a training loss logged, the training loss tells the weights' story
    recs = [Record(s, 1.0 - 0.05 * s, val_loss=v) for s, v in enumerate(vals[:-1] + [377.0])]
    assert [a for a in drive(DivergenceDetector(), recs) if a.evidence.get("rule") == "val_lost"] == []
