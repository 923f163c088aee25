"""The oscillation detector's held_back rule ("LR too high": no progress for a doubling at a high
LR, a fall once the schedule lowered it) on logs of the tune part of the real corpus
(bench/real/, provenance in bench/real/SOURCES.md) and on variants that keep their class
(thinned, the step column x10). The holdout part is never read here."""

import dataclasses
import math
import random

import pytest

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.detectors import Engine
from losswatch.detectors.base import drive
from losswatch.detectors.oscillation import OscillationDetector
from losswatch.detectors.types import Record

CS336_LR_3E2 = "histories/xiamishaonian111__cs336__experiments-lr-sweep-3e-2-metrics-jsonl.csv"
CS336_LR_1E1 = "histories/div__xiamishaonian111__cs336__lr-sweep-1e-1-metrics.csv"  # LR too high
CS336_LR_1E3 = "histories/xiamishaonian111__cs336__experiments-lr-sweep-1e-3-metrics-jsonl.csv"  # healthy
ALPACA = "histories/yc1999__stanford_alpaca__output-trainer-state.csv"  # healthy, 3 epochs


def _variant(recs, every=1, step_x=1):
    """Every ``every``-th record, with the step column times ``step_x``: the same run logged
    more sparsely or counting steps differently."""
    return [dataclasses.replace(r, step=r.step * step_x) for r in recs[::every]]


@pytest.mark.parametrize("every,step_x", [(1, 1), (2, 1), (3, 1), (1, 10)])
def test_a_loss_stuck_at_the_peak_lr_that_falls_as_the_cosine_decay_lowers_it_is_an_lr_too_high(every, step_x):
    # CS336 sweep at peak LR 3e-2: 3.7-4.0 while the LR sits at its peak (steps 250-1800), then
    # falling as the cosine decay brings the LR down; the author calls 3e-2 the edge of stability
    alerts = one_at_a_time(_variant(tune_records(CS336_LR_3E2), every, step_x))[1]
    osc = raised(alerts, "oscillation", "warning")
    assert [a.evidence["rule"] for a in osc] == ["held_back"]
    a = osc[0]
    assert a.action.type == "scale_lr" and a.action.params["factor"] < 1
    assert 2000 * step_x <= a.step <= 3500 * step_x  # once the decay has brought the LR down
    assert a.evidence["lr"] <= 0.7 * a.evidence["lr_held"] and a.evidence["lr_held"] >= 0.02
    assert a.evidence["level"] < a.evidence["level_held"] - 0.3
    assert "LR too high" in a.message and "not lost" in a.message
    assert not [x for x in alerts if x.action.direction == "up"]


def _training_loss_every(recs, every):
    """Every ``every``-th training loss, each evaluation kept on a line of its own: the same run
    with its training loss logged less often than it evaluates (or a trainer that writes its
    evaluations on lines of their own)."""
    out = []
    for k, r in enumerate(recs):
        if k % every == 0:
            out.append(r)
        elif r.val_loss is not None:
            out.append(dataclasses.replace(r, loss=None))
    return out


FIRST_QUARTER_LAG = (
    "the level's ~10-record lag hides the start of the fall that begins at c: its first quarter "
    "makes 0.05-0.10 of the fall, below steady 0.1, by where the checkpoints land among the "
    "records; a drop that comes later gives the same (the Alpaca fine-tune every 10th record: "
    "0.06, its drop spread over the other three), so the first quarter tells neither")


@pytest.mark.parametrize("every", [
    2, 3, 4,
    pytest.param(5, marks=pytest.mark.xfail(strict=True, reason=FIRST_QUARTER_LAG)),
    6, 7, 8,
    pytest.param(9, marks=pytest.mark.xfail(strict=True, reason=(
        "a training loss every 90 steps: the level's ~10-record lag (900 steps) is a doubling at "
        "b ~ 1000, so the held doubling still carries the warm-up's descent (1.03 noise units "
        "against stall_z 1.0 at 4150) and the fall after c at 3520 is 2.6 units (fall_z 3.0)"))),
    10])
def test_held_back_is_seen_when_evaluation_lines_fall_on_most_checkpoints(every):
    # the CS336 sweep at 3e-2 evaluates every 10th record; with its training loss kept every
    # 2nd-10th record beside them, most checkpoints are crossed on an evaluation's line (a
    # checkpoint crossed there was skipped: 2 and 10 were silent)
    recs = _training_loss_every(tune_records(CS336_LR_3E2), every)
    assert sum(r.loss is None for r in recs) >= 25
    ref = one_at_a_time(recs)[1]
    osc = raised(ref, "oscillation", "warning")
    assert [a.evidence["rule"] for a in osc] == ["held_back"]
    assert osc[0].action.params["factor"] < 1 and 2000 <= osc[0].step <= 4000
    key = [(a.id, a.event, a.last_step) for a in ref]
    for size in (17, 64, 1000):
        assert [(a.id, a.event, a.last_step) for a in in_batches(recs, size)[1]] == key, size


@pytest.mark.parametrize("every", [
    2, pytest.param(3, marks=pytest.mark.xfail(strict=True, reason=FIRST_QUARTER_LAG)), 4, 5,
    pytest.param(6, marks=pytest.mark.xfail(strict=True, reason=FIRST_QUARTER_LAG)), 7, 8,
    pytest.param(9, marks=pytest.mark.xfail(strict=True, reason=FIRST_QUARTER_LAG)), 10])
def test_the_sweeps_unstable_1e_1_run_is_told_to_cut_the_lr_at_every_training_loss_interval(every):
    # the same sweep at 1e-1 (LR too high, a loss that swings at its peak LR)
    recs = _training_loss_every(tune_records(CS336_LR_1E1), every)
    alerts = one_at_a_time(recs)[1]
    osc = raised(alerts, "oscillation", "warning")
    assert osc and osc[0].action.type == "scale_lr" and osc[0].action.params["factor"] < 1
    assert not [x for x in alerts if x.action.direction == "up"]


@pytest.mark.parametrize("every,step_x", [(1, 1), (2, 1), (3, 1), (5, 1), (1, 10)])
def test_the_same_sweeps_run_at_a_good_lr_is_not_held_back(every, step_x):
    # the sweep's LR 1e-3 run (healthy): it keeps falling at its peak, so nothing stood still
    alerts = one_at_a_time(_variant(tune_records(CS336_LR_1E3), every, step_x))[1]
    assert not [a for a in alerts if a.detector == "oscillation"]
    assert not [a for a in alerts if a.action.direction != "none" and a.severity != "info"]


def test_a_fine_tunes_drops_at_its_epoch_boundaries_are_not_a_fall_that_follows_the_lr():
    # a 3-epoch Alpaca fine-tune with its step column x10: flat in epoch 1, a drop at each
    # epoch boundary while the linear decay lowers the LR; the fall from 3450 to 6890 is one drop
    recs = _variant(tune_records(ALPACA), 1, 10)
    assert drive(OscillationDetector(), recs) == []
    # without the quarters' steadiness test, that drop reads as a fall that follows the LR
    lumpy = drive(OscillationDetector(steady=0.0), recs)
    assert [a.evidence["rule"] for a in lumpy[:1]] == ["held_back"]


@pytest.mark.parametrize("every", [5, 10])
def test_the_fine_tunes_epoch_boundary_drop_spread_by_a_sparse_logs_lag_is_no_fall_that_follows_the_lr(every):
    # the Alpaca fine-tune logged every 5th or 10th step: the level's lag spreads the drop at
    # step 406 over the last three quarters of the doubling 311-611 (0.27, 0.50, 0.16 at every
    # 10th); only its first quarter (0.06, below steady) keeps it silent, as it keeps the CS336
    # sweeps silent at some cadences: skipping or halving that quarter's bar tells it "LR too high"
    recs = _variant(tune_records(ALPACA), every)
    assert not [a for a in drive(OscillationDetector(), recs) if a.severity != "info"]


def _step_decay(seed=0):
    """A run at its noise floor whose LR drops 10x at step 1500: the loss drops at once."""
    r = random.Random(seed)
    recs = []
    for s in range(10, 6000, 10):
        lr = 0.1 if s < 1500 else 0.01
        floor = 2.0 + 1.5 * math.exp(-s / 100) + (0.3 if s < 1500 else 0.0)
        recs.append(Record(s, floor + r.gauss(0, 0.05), lr=lr))
    return recs


def test_a_step_decay_that_anneals_the_noise_floor_at_once_is_not_held_back():
    assert drive(OscillationDetector(), _step_decay()) == []


def _held_back_run(seed=0, end=5000):
    r = random.Random(seed)

    def lr(s):
        return 0.03 * min(1.0, s / 250) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / 5000)))

    def loss(s):
        return max(3.9 - 0.0008 * max(0, s - 1600), 2.0) if s > 250 else 6.2 - 0.01 * s
    return [Record(s, loss(s) + r.gauss(0, 0.05), lr=lr(s)) for s in range(10, end, 10)]


def test_both_paths_and_a_restored_engine_agree_on_a_held_back_run():
    recs = _held_back_run()
    ref = [(a.id, a.event, a.last_step, a.evidence.get("rule")) for a in one_at_a_time(recs)[1]]
    assert ("held_back" in {e[3] for e in ref})
    for size in (17, 64, 1000):
        got = [(a.id, a.event, a.last_step, a.evidence.get("rule")) for a in in_batches(recs, size)[1]]
        assert got == ref, size
    eng, out = Engine("r"), []
    for k in range(0, len(recs), 37):
        eng = Engine.from_bytes(eng.to_bytes())
        out += eng.update_batch(recs[k:k + 37])
    assert [(a.id, a.event, a.last_step, a.evidence.get("rule")) for a in out] == ref


def test_both_paths_agree_when_validation_only_lines_fall_on_checkpoints():
    # an evaluation logged on a line of its own (no training loss) on the first step of a
    # checkpoint, while the held_back episode is open: the batch path must read it as the
    # one-record path does
    recs = _held_back_run(end=9000)
    for s in (4100, 4880, 5800, 6900, 8200):
        k = next(i for i, x in enumerate(recs) if x.step == s)
        recs[k] = Record(s, None, lr=recs[k].lr, val_loss=recs[k].loss + 0.1)
    ref = [(a.id, a.event, a.last_step, a.evidence.get("rule")) for a in one_at_a_time(recs)[1]]
    assert "held_back" in {e[3] for e in ref}
    for size in (17, 1000):
        got = [(a.id, a.event, a.last_step, a.evidence.get("rule")) for a in in_batches(recs, size)[1]]
        assert got == ref, size


def test_a_state_saved_before_the_rule_restores_and_the_rule_starts_at_the_next_checkpoint():
    d = OscillationDetector()
    d.set_state({"best_nl": 40, "best_lr": 0.01})  # what the detector saved before held_back
    assert (d.best_nl, d.held_k, d.held_cps, d.last_closed) == (40, -1, {}, -1)
    recs = _held_back_run()
    assert [a.evidence["rule"] for a in drive(d, recs)[:1]] == ["held_back"]
