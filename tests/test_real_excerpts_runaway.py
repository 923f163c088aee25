"""A jump that does not come back, on real excerpts from the tune part of the corpus (bench/real/,
provenance in bench/real/SOURCES.md): the record after a loss spike tells a bad batch (lower
again) from a run-away (higher still). The holdout part is never read here."""

from pathlib import Path

import pytest

from detector_helpers import one_at_a_time, raised, tune_records
from losswatch.detectors import Engine
from losswatch.detectors.base import drive
from losswatch.detectors.divergence import DivergenceDetector
from losswatch.detectors.types import Record

REAL = Path(__file__).resolve().parent.parent / "bench" / "real"

RERANKER = "issues/flagopen__flagembedding__865.csv"  # 0.21-0.33, then 0.535, 0.591: "never came down"
FLOW = "issues/bayesflow-org__bayesflow__23.csv"  # NLL -7.8, then 719, 3.5e6, then back down


def _replay(rel: str):
    return one_at_a_time(tune_records(rel))[1]


def test_a_loss_that_rises_again_after_its_jump_gets_an_lr_cut_on_that_record():
    alerts = _replay(RERANKER)
    div = raised(alerts, "divergence", "warning")
    assert div and div[0].step == 8 and div[0].evidence["rule"] == "spike_climbs"
    assert div[0].action.type == "scale_lr" and div[0].action.params["factor"] < 1
    assert "0.535 -> 0.591" in div[0].message
    # the jump itself stays a spike note: one record cannot tell a bad batch from a run-away
    assert [a.severity for a in raised(alerts, "spike")] == ["info"]


def test_a_two_record_blow_up_is_unstable_not_lost_until_the_loss_stays_up():
    # a normalizing flow's loss climbs for two records and falls back on the third: an LR cut is
    # advised, but no critical "diverging" verdict while it may still be an excursion
    alerts = _replay(FLOW)
    div = [a for a in raised(alerts, "divergence") if a.step <= 12]
    assert [(a.step, a.severity, a.evidence["rule"]) for a in div] == [(10, "warning", "spike_climbs")]
    assert "LR too high" in div[0].message and "not show whether the run is lost" in div[0].message


def test_a_spike_that_comes_down_on_the_next_record_is_no_run_away():
    # the reranker's values with the record after the jump lower than the jump: a bad batch
    losses = [0.2524, 0.2185, 0.2577, 0.2168, 0.298, 0.3283, 0.2134, 0.5352, 0.48, 0.52, 0.33, 0.26]
    eng = Engine("r")
    alerts = [a for s, x in enumerate(losses) for a in eng.update(Record(s, x))]
    assert raised(alerts, "divergence") == []


def test_a_rise_after_a_spike_under_a_calm_grad_norm_is_the_data():
    losses = [0.2524, 0.2185, 0.2577, 0.2168, 0.298, 0.3283, 0.2134, 0.5352, 0.591]
    gns = [10.0, 9.8, 10.3, 9.9, 10.1, 10.0, 9.7, 10.2, 10.4]
    assert drive(DivergenceDetector(), map(Record, range(9), losses, gns)) == []


def test_a_high_lr_run_bouncing_back_towards_its_first_loss_is_no_run_away():
    # least squares under SGD at 10x its LR: the loss swings back up to about where it started
    # (1.45) and comes down again; the climb after the jump stays below 1.5x the first loss
    losses = [1.45, 0.70, 0.57, 0.76, 1.06, 0.96, 1.44, 1.89, 0.56, 0.81]
    gns = [3.1, 1.2, 1.3, 1.9, 3.2, 1.9, 2.9, 4.6, 1.1, 1.6]
    alerts = drive(DivergenceDetector(), map(Record, range(10), losses, gns))
    assert [a for a in alerts if a.evidence["rule"] == "spike_climbs"] == []
    # the same climb past 1.5x the first loss is one
    losses[7] = 2.3
    alerts = drive(DivergenceDetector(), map(Record, range(10), losses, gns))
    assert [(a.step, a.evidence["rule"]) for a in alerts][:1] == [(7, "spike_climbs")]


@pytest.mark.parametrize("rel", [RERANKER, FLOW])
def test_the_batch_path_gives_the_same_alerts(rel):
    one = [(a.id, a.severity, a.last_step) for a in _replay(rel)]
    eng = Engine("r")
    eng.SMALL_BATCH = 0  # short excerpts: force the vectorised path
    batch = [(a.id, a.severity, a.last_step) for a in eng.update_batch(tune_records(rel))]
    assert batch == one


def test_an_engine_saved_between_the_spike_and_the_next_record_still_sees_the_climb():
    recs = tune_records(RERANKER)
    eng = Engine("r")
    out = eng.update_batch(recs[:8])
    eng = Engine.from_bytes(eng.to_bytes())
    out += eng.update_batch(recs[8:])
    assert [(a.id, a.event, a.last_step) for a in out] == [(a.id, a.event, a.last_step) for a in _replay(RERANKER)]
    assert any(a.evidence.get("rule") == "spike_climbs" for a in out)
