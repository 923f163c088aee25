"""LR too low in a sparse log (fewer than ``min_records`` loss records: a log thinned to one row in
10, a sweep that logs every few steps): slow_progress judges it by the near-linear test of
``unlogged`` alone, at a logged LR never lowered (``sparse_records``). On real logs of the
corpus's tune part (bench/real/, provenance in bench/real/SOURCES.md) and on the shapes it must
leave alone. The holdout part is never read here."""

import math
import random
from dataclasses import replace

import pytest

from detector_helpers import one_at_a_time, raised, tune_records
from losswatch.detectors import Engine
from losswatch.detectors.types import Record

# a MoE language model trained from scratch at a constant LR 1e-4, the smallest of its LR search:
# 10.84 -> 6.6 over 1,000 steps, near-linear (labelled LR too low, sure high)
EXP2 = "histories/vukrosic__blueberry-llm-kimi-deepseek__exp2-lr-search-results-lr-1e-04-result-json.csv"
# a healthy DPO fine-tune (3 epochs, LR 5e-7 decaying linearly to 0, a loss every 10 steps)
DPO_DECAY = "histories/silver-8ce__llamatest__trainer-state.csv"


def _thin(recs, every, step_x=1):
    return [replace(r, step=r.step * step_x) for r in recs[::every]]


def _raises(alerts, detector="slow_progress"):
    return [(a.step, a.detector, a.action.params["factor"]) for a in raised(alerts, min_severity="warning")
            if a.action.direction == "up" and a.detector == detector]


@pytest.mark.parametrize("every,step_x,step", [(10, 1, 731), (10, 10, 5810), (5, 1, 516)])
def test_a_constant_lr_run_falling_linearly_is_told_to_raise_it_at_one_row_in_ten(every, step_x, step):
    # one row in 10: 100 records; at step 731 the loss fell 9.01 -> 7.39 since 370, 89 % of all
    # the progress before it, the doubling before 163 % of the progress before that, at 0.72x
    # its pace per step. Missed before: fewer than min_records (256) loss records
    recs = _thin(tune_records(EXP2), every, step_x)
    assert len(recs) < 256
    alerts = one_at_a_time(recs)[1]
    assert _raises(alerts)[:1] == [(step, "slow_progress", 3.0)]
    a = [a for a in raised(alerts, "plateau", "warning") if a.detector == "slow_progress"][0]
    assert 0.5 <= a.evidence["h"] <= 2.0 and 0.5 <= a.evidence["share_before"] <= 2.0
    assert 0.5 <= a.evidence["pace_ratio"] <= 2.0 and "records)" in a.message
    # the floor at min_records again: silent, as before
    eng = Engine("r", params={"slow_progress": {"sparse_records": 256}})
    assert not _raises([a for rec in recs for a in eng.update(rec)])


def test_the_batch_path_gives_the_same_alerts_on_a_sparse_log():
    recs = _thin(tune_records(EXP2), 10)
    one = [(a.id, a.severity, a.last_step) for a in one_at_a_time(recs)[1]]
    eng = Engine("r")
    eng.SMALL_BATCH = 0
    assert [(a.id, a.severity, a.last_step) for a in eng.update_batch(recs)] == one


@pytest.mark.parametrize("every", [2, 3, 5, 10])
def test_a_dpo_fine_tune_thinned_is_not_told_to_raise_its_lr(every):
    # near-linear by DPO's design at a tiny LR (h 0.75-0.78, the doubling before 0.52-0.73 when
    # thinned to one row in 2 or 3) but its LR decays from the start of its schedule: never
    # at its peak when judged; without its LR column a sparse log is not judged at all
    recs = _thin(tune_records(DPO_DECAY), every)
    assert not _raises(one_at_a_time(recs)[1])
    assert not _raises(one_at_a_time([replace(r, lr=None) for r in recs])[1])


def _descent(seed, tau, every):
    r = random.Random(seed)
    return [Record(s, (0.3 + 2.0 * math.exp(-s / tau)) * (1 + r.gauss(0, 0.02)), None, 1e-3, None)
            for s in range(0, 3000, every)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tau", [30.0, 100.0, 300.0])
def test_a_healthy_exponential_descent_thinned_is_not_told_to_raise_its_lr(seed, tau):
    # constant LR, logged every 10 steps for 3,000 steps (300 records, judged sparse until 2,560):
    # the level's lag makes the first doublings look slow, never near-linear both ways
    assert not _raises(one_at_a_time(_descent(seed, tau, 10))[1])


def test_a_descent_the_full_log_calls_too_slow_is_too_slow_thinned():
    # tau 1,000 steps at a constant LR: still within 1.5 time constants at step 256, "LR too low"
    # by the rule's own measure (h = exp(-c / tau)) at full cadence; thinned to a loss every 10
    # steps it was missed before (fewer than 256 records until step 2,560)
    assert _raises(one_at_a_time(_descent(0, 1000.0, 1))[1])[:1] == [(256, "slow_progress", 3.0)]
    assert _raises(one_at_a_time(_descent(0, 1000.0, 10))[1])[:1] == [(730, "slow_progress", 3.0)]
