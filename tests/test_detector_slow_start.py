"""slow_start: a log that begins at a chance level ln(k) and leaves it at a slow, steady pace is an
LR too small, on real logs of the corpus's tune part (bench/real/, provenance in SOURCES.md)."""

from dataclasses import replace

import pytest

from detector_helpers import in_batches, one_at_a_time, raised, tune_records

EPOCHS = "histories/unknown__i2dl-hyperparameter-notes__lr-1e-4-block-config3.csv"  # lr 1e-4, 20 epochs
ITERATIONS = "histories/tpucci__apprentissage-automatique__traces-run-two-layer-net-execution-md.csv"
HEALTHY_AT_LN2 = "histories/silver-8ce__llamatest__trainer-state.csv"  # a classifier fine-tune from ln 2
HEALTHY_AT_LN2_SHORT = "histories/tashu014__lora-imdb-distilbert__trainer-state.csv"
HEALTHY_AT_LN3 = "issues/openlm-research__open_llama__63.csv"


def _slow_start(records):
    return [a for a in raised(one_at_a_time(records)[1], "plateau", "warning") if a.detector == "slow_start"]


def test_an_epoch_log_that_leaves_ln_10_at_a_steady_pace_is_told_to_raise_the_lr():
    # training and validation loss per epoch: 2.302 -> 2.10 in 20 epochs, almost linearly
    found = _slow_start(tune_records(EPOCHS))
    assert [(a.step, a.action.type) for a in found] == [(16, "scale_lr")]
    assert found[0].action.params["factor"] > 1
    assert found[0].evidence["epochs"] and found[0].evidence["chance_k"] == 10


def test_a_loss_printed_every_100_iterations_still_near_ln_10_after_700_steps_is_told_to_raise_the_lr():
    found = _slow_start(tune_records(ITERATIONS))
    assert [(a.step, a.action.params["factor"]) for a in found] == [(800, 3.0)]
    assert 0.05 < found[0].evidence["gained"] < 0.15


def test_the_same_lines_without_an_evaluation_on_each_could_be_any_runs_first_steps():
    # 20 records at steps 1-20 and no evaluations: the first 20 steps of a healthy run look so too
    recs = [replace(r, val_loss=None) for r in tune_records(EPOCHS)]
    assert _slow_start(recs) == []


def test_an_excerpt_that_begins_below_the_chance_level_is_not_judged():
    recs = tune_records(ITERATIONS)
    assert _slow_start(recs[4:]) == []


@pytest.mark.parametrize("change", ["full", "steps x10", "every 2nd row"])
def test_the_epoch_verdict_holds_at_another_step_scale_and_cadence(change):
    recs = tune_records(EPOCHS)
    if change == "steps x10":
        recs = [replace(r, step=10 * r.step) for r in recs]
    elif change == "every 2nd row":
        recs = recs[::2]
    assert len(_slow_start(recs)) == 1


@pytest.mark.parametrize("rel", [HEALTHY_AT_LN2, HEALTHY_AT_LN2_SHORT, HEALTHY_AT_LN3])
@pytest.mark.parametrize("drop_lr", [False, True])
def test_healthy_runs_that_start_at_chance_are_not_told_to_raise_the_lr(rel, drop_lr):
    # the LLaMA fine-tune without its LR column has gained 22 % of ln 2 at step 510, its fall
    # still steady: the gain bar (15 %) is what keeps it quiet
    recs = tune_records(rel)
    if drop_lr:
        recs = [replace(r, lr=None) for r in recs]
    assert _slow_start(recs) == []


@pytest.mark.parametrize("rel", [EPOCHS, ITERATIONS])
@pytest.mark.parametrize("size", [1, 3, 7])
def test_batches_give_the_alerts_of_the_one_record_path(rel, size):
    recs = tune_records(rel)
    assert in_batches(recs, size)[1] == one_at_a_time(recs)[1]


def test_a_loss_of_another_kind_that_starts_near_a_chance_level_by_coincidence_is_not_judged():
    # a segmentation fine-tune's loss + 5 starts at 6.93, 0.35 % from ln 1000 = 6.908, and falls
    # slowly: that close is no uniform prediction (the dead rules' band is 0.2 %)
    recs = [replace(r, loss=r.loss + 5) if r.loss is not None else r
            for r in tune_records("histories/protaxy__mai_moscow_3d_segmentation__checkpoint-500-trainer-state.csv")]
    assert _slow_start(recs) == []
