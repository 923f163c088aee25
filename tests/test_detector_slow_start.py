"""slow_start: a log that begins at a chance level ln(k) and leaves it at a slow, steady pace is an
LR too small, on real logs of the corpus's tune part (bench/real/, provenance in SOURCES.md)."""

import math
import random
from dataclasses import replace

import pytest

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors.slow_start import _checkpoints_between, on_grid
from losswatch.detectors.types import Record

EPOCHS = "histories/unknown__i2dl-hyperparameter-notes__lr-1e-4-block-config3.csv"  # lr 1e-4, 20 epochs
ITERATIONS = "histories/tpucci__apprentissage-automatique__traces-run-two-layer-net-execution-md.csv"
HEALTHY_AT_LN2 = "histories/silver-8ce__llamatest__trainer-state.csv"  # a classifier fine-tune from ln 2
HEALTHY_AT_LN2_SHORT = "histories/tashu014__lora-imdb-distilbert__trainer-state.csv"
HEALTHY_AT_LN3 = "issues/openlm-research__open_llama__63.csv"


def _slow_start_of(alerts):
    return [a for a in raised(alerts, "plateau", "warning") if a.detector == "slow_start"]


def _slow_start(records):
    return _slow_start_of(one_at_a_time(records)[1])


LN10 = math.log(10)


def _slow_run(n=70, lrs=None, vals=None, seed=0):
    """A loss logged every 10 steps from ln 10, falling 0.2 % of it per 100 steps with a little
    noise: at record 64 (step 640) 12.6 % below it, a steady pace (the synthetic too-small LR)."""
    rng = random.Random(seed)
    col = lambda xs, r: None if xs is None else xs[r - 1]  # noqa: E731
    return [Record(10 * r, LN10 * (1 - 0.002 * (r - 1)) + rng.gauss(0, 0.002), lr=col(lrs, r), val_loss=col(vals, r))
            for r in range(1, n + 1)]


def _episodes(records):
    """The slow_start episodes as they stand at the end (last change of each alert id)."""
    last = {}
    for a in one_at_a_time(records)[1]:
        if a.detector == "slow_start":
            last[a.id] = a
    return list(last.values())


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
    # classifier fine-tunes from ln 2 and an LM from ln 3, with and without their LR column
    recs = tune_records(rel)
    if drop_lr:
        recs = [replace(r, lr=None) for r in recs]
    assert _slow_start(recs) == []


@pytest.mark.parametrize("rel", [EPOCHS, ITERATIONS])
@pytest.mark.parametrize("size", [1, 3, 7])
def test_batches_give_the_alerts_of_the_one_record_path(rel, size):
    recs = tune_records(rel)
    alerts = one_at_a_time(recs)[1]
    assert _slow_start_of(alerts)
    assert in_batches(recs, size)[1] == alerts


def test_a_loss_of_another_kind_that_starts_near_a_chance_level_by_coincidence_is_not_judged():
    # a segmentation fine-tune's loss + 5 starts at 6.93, 0.35 % from ln 1000 = 6.908, and falls
    # slowly: that close is no uniform prediction (the dead rules' band is 0.2 %)
    recs = [replace(r, loss=r.loss + 5) if r.loss is not None else r
            for r in tune_records("histories/protaxy__mai_moscow_3d_segmentation__checkpoint-500-trainer-state.csv")]
    assert _slow_start(recs) == []


def test_the_synthetic_slow_start_warns_at_record_64_and_stays_open_within_the_band():
    [ep] = _episodes(_slow_run(75))
    assert (ep.step, ep.resolved_step, ep.action.params["factor"]) == (640, None, 3.0)
    assert "ln(10) = 2.3026" in ep.message


def test_a_loss_that_rises_above_its_first_loss_closes_an_open_warning():
    # the LR was raised but not logged: the loss bumps to 2.5 (above ln 10) then falls fast
    tail = [Record(10 * r, 2.5) for r in range(71, 75)] + \
        [Record(10 * r, 2.0 * 0.9 ** (r - 75) + 0.1 + 0.01 * (r % 3)) for r in range(75, 120)]
    recs = _slow_run() + tail
    eng, alerts = one_at_a_time(recs)
    [ep] = _episodes(recs)
    assert ep.step == 640 and ep.resolved_step is not None and ep.resolved_step < 800
    assert "rose above its first loss" in ep.evidence["resolution"]
    rec = eng.recommendation
    assert rec is None or rec.type != "scale_lr"


def test_a_loss_that_leaves_the_chance_level_between_checkpoints_resolves_at_once():
    # warned at record 64; from record 71 the loss drops fast: resolved long before record 96
    tail = [Record(10 * r, 1.6 - 0.01 * (r - 71) + 0.005 * (r % 2)) for r in range(71, 100)]
    [ep] = _episodes(_slow_run() + tail)
    assert ep.step == 640 and ep.resolved_step is not None and ep.resolved_step < 760
    assert "left the chance level" in ep.evidence["resolution"]


def test_an_lr_raised_twice_resolves_the_warning():
    lrs = [1e-4] * 69 + [3e-4] * 11
    [ep] = _episodes(_slow_run(80, lrs=lrs))
    assert (ep.step, ep.resolved_step) == (640, 700)
    assert ep.evidence["lr"] == 1e-4 and "LR raised" in ep.evidence["resolution"]


def test_an_lr_raised_less_than_twice_keeps_it_open():
    lrs = [1e-4] * 69 + [1.5e-4] * 6
    [ep] = _episodes(_slow_run(75, lrs=lrs))
    assert ep.resolved_step is None


def test_a_warm_up_still_rising_explains_the_slow_pace():
    assert _slow_start(_slow_run(80, lrs=[1e-4 * r for r in range(1, 81)])) == []


def test_a_decayed_schedule_explains_the_slow_pace():
    lrs = [1e-3] * 10 + [2e-4] * 70  # decayed to 20 % of its peak
    assert _slow_start(_slow_run(80, lrs=lrs)) == []
    assert len(_slow_start(_slow_run(80, lrs=[1e-3] * 80))) == 1  # the same loss at a steady LR


def test_a_logger_that_repeats_the_validation_loss_on_every_line_is_not_one_evaluation_per_record():
    # 40 steps, one record each, the loss falling 0.004 per step from ln 10 and the one validation
    # loss repeated on every line: 40 steps of any run's start, not 40 evaluations
    recs = [Record(s, LN10 - 0.004 * (s - 1), val_loss=2.3026) for s in range(1, 41)]
    assert _slow_start(recs) == []


def test_a_validation_loss_that_does_not_fall_vetoes_a_slow_start():
    assert _slow_start(_slow_run(80, vals=[2.3026] * 80)) == []
    falling = [LN10 - 0.001 * r for r in range(1, 81)]
    assert len(_slow_start(_slow_run(80, vals=falling))) == 1


def test_the_checkpoint_test_and_the_checkpoint_list_agree():
    top = 10 ** 5
    assert _checkpoints_between(1, top) == [n for n in range(1, top + 1) if n >= 3 and on_grid(n)]
    assert _checkpoints_between(100, 1000) == [n for n in range(100, 1001) if on_grid(n)]


@pytest.mark.parametrize("case", ["rise above L0", "leaves the band", "lr raised", "repeated val"])
@pytest.mark.parametrize("size", [1, 5, 16])
def test_batches_give_the_alerts_of_the_one_record_path_on_the_resolutions(case, size):
    if case == "rise above L0":
        recs = _slow_run() + [Record(10 * r, 2.5 if r < 75 else 1.0 - 0.01 * r) for r in range(71, 100)]
    elif case == "leaves the band":
        recs = _slow_run() + [Record(10 * r, 1.6 - 0.01 * (r - 71)) for r in range(71, 100)]
    elif case == "lr raised":
        recs = _slow_run(80, lrs=[1e-4] * 69 + [3e-4] * 11)
    else:
        recs = _slow_run(80, vals=[2.3 if r < 40 else 2.2 for r in range(1, 81)])
    alerts = one_at_a_time(recs)[1]
    assert _slow_start_of(alerts) or case == "repeated val"
    assert in_batches(recs, size)[1] == alerts
