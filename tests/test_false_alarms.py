"""Healthy runs told to change their LR: each class of false alarm, on a real log of the tune part
of the corpus (bench/real/, provenance in bench/real/SOURCES.md) or a benchmark run (bench/runs/),
next to the true case the same rule must still catch. The holdout part is never read here."""

import dataclasses
import random
from pathlib import Path

import pytest

from detector_helpers import in_batches, one_at_a_time, raised, replay, tune_records
from losswatch.service.readers import read_run
from test_real_excerpts import REAL, _replay

RUNS = Path(__file__).resolve().parent.parent / "bench" / "runs"


def _lr_changing(alerts):
    """Warning-or-worse alerts whose action changes the LR, rolls back or stops."""
    return [a for a in raised(alerts, min_severity="warning") if a.action is not None and a.action.direction != "none"]


def _thinned(rel: str, every: int = 10):
    return list(read_run(REAL / rel))[::every]


# -- slow progress: a drop at an epoch boundary is not the pace of a too-small LR -----------------
ALPACA = "histories/yc1999__stanford_alpaca__output-trainer-state.csv"


def test_a_multi_epoch_fine_tunes_drop_at_the_epoch_boundary_is_not_a_too_small_lr():
    # 3 epochs of an instruction fine-tune: flat at ~1.08 through epoch 1, a drop to ~0.72 when
    # epoch 2 starts (step ~406: the model sees the data again), flat again. Between checkpoints
    # 256 and 512 the level fell 1.08 -> 0.72, 86 % of the progress before: "raise the LR x3"
    alerts = _replay(ALPACA)
    assert _lr_changing(alerts) == []
    # thinned to every 10th row the verdict is the same (the rule also needs 256 loss records)
    assert _lr_changing(one_at_a_time(_thinned(ALPACA))[1]) == []


def _epoch_drop(steady: bool, n: int = 700, seed: int = 3):
    """A loss that falls 1.5 -> 1.1 by step 100, then from 1.08 to 0.72 between steps 256 and
    512: at a steady pace, or in one drop at step 406 (flat before and after)."""
    r = random.Random(seed)
    out = []
    for s in range(n):
        if s < 100:
            base = 1.5 - 0.4 * s / 100
        elif s < 256:
            base = 1.1 - 0.02 * (s - 100) / 156
        elif steady:
            base = 1.08 - 0.36 * min(s - 256, 256) / 256
        else:
            base = 1.08 if s < 406 else 0.72
        out.append(base * (1 + r.gauss(0, 0.03)))
    return out


def test_the_same_descent_at_a_steady_pace_is_still_a_too_small_lr():
    steady = raised(replay(_epoch_drop(True), lrs=[2e-5] * 700)[1], "plateau", "warning")
    assert [(a.detector, a.step, a.action.params["factor"] > 1) for a in steady] == [("slow_progress", 512, True)]
    assert raised(replay(_epoch_drop(False), lrs=[2e-5] * 700)[1], min_severity="warning") == []


def test_the_pace_checkpoints_are_the_same_in_batches_and_one_at_a_time():
    records = list(read_run(REAL / ALPACA))
    one = [(a.id, a.severity, a.last_step) for a in one_at_a_time(records)[1]]
    for size in (64, 1000):
        assert [(a.id, a.severity, a.last_step) for a in in_batches(records, size)[1]] == one


# -- divergence, raw run-away: only while a descent is fresh -------------------------------------
def _bench(run_id: str):
    return one_at_a_time(list(read_run(RUNS / f"{run_id}.csv")))[1]


@pytest.mark.parametrize("run_id", [
    # SGD at 10x LR on least squares, at its noise floor (0.4-1.6) since step ~20: three rises in a row
    # to 3x the lowest value, 80 records after that value, while the trend has been flat
    "linreg-sgd-one_cycle-x10-s0",
    # a CNN knocked back to chance by a bad batch at step 303, recovering: three rises of 0.015
    # at step 367, 133x the best it held before the knock
    "cnn-sgd-spike-x1-s0",
])
def test_rises_far_from_a_fresh_descent_are_left_to_the_noise_aware_rules(run_id):
    rules = [a.evidence.get("rule") for a in raised(_bench(run_id), "divergence", "warning")]
    assert "raw_runaway" not in rules


def test_a_run_away_right_after_a_fast_descent_is_still_caught_by_the_raw_best():
    # a CNN at 10x its LR: 2.3 -> 0.95 by step 41 (the trend still gaining 1 % every few records),
    # then 1.65, 3.07, 12.7: lost at step 43
    div = raised(_bench("cnn-sgd-constant-x10-s0"), "divergence", "warning")
    assert div and div[0].step == 44 and div[0].evidence["rule"] == "raw_runaway"


# -- dead at chance: not while the LR still ramps up ----------------------------------------------
def _at_chance_then_learning(ramp: int, n: int = 120, seed: int = 5):
    """A 10-class classifier at ln 10 (+-0.2 %) while its LR ramps up over ``ramp`` steps from
    0.002 to 0.1, then learning; with ``ramp`` 0 the LR is 0.1 from the start and the loss stays."""
    r = random.Random(seed)
    lrs = [0.002 + (0.1 - 0.002) * min(s, ramp) / ramp if ramp else 0.1 for s in range(n)]
    losses = [2.3026 * (1 + r.uniform(-0.0015, 0.0015)) if s < 40 or not ramp else 2.3026 - 0.02 * (s - 40)
              for s in range(n)]
    return losses, lrs


def test_a_classifier_at_chance_while_its_lr_warms_up_is_not_dead():
    # a CNN's one-cycle warm-up starts at 1/50 of its peak LR: its loss sits within 0.2 % of
    # ln 10 for the first 40 steps, then it learns (it got "run is dead, stop" at step 19)
    losses, lrs = _at_chance_then_learning(ramp=60)
    assert raised(replay(losses, lrs=lrs)[1], "dead") == []


def test_a_classifier_at_chance_under_its_full_lr_is_still_dead_and_so_after_a_warm_up():
    losses, lrs = _at_chance_then_learning(ramp=0)
    dead = raised(replay(losses, lrs=lrs)[1], "dead", "warning")
    assert dead and dead[0].step == 4  # five values within 0.1 % (flat_start's close band)
    # the same flat loss after a 20-step warm-up: dead once the LR stops rising
    r = random.Random(6)
    losses = [2.3026 * (1 + r.uniform(-0.0015, 0.0015)) for _ in range(60)]
    lrs = [0.1 * min(s + 1, 20) / 20 for s in range(60)]
    dead = raised(replay(losses, lrs=lrs)[1], "dead", "warning")
    assert dead and dead[0].step == 20


# -- plateau: a log that begins mid-run has no start level to be "barely below" ------------------
CS336 = "histories/xiamishaonian111__cs336__experiments-lr-sweep-1e-3-metrics-jsonl.csv"


def test_the_second_half_of_a_healthy_run_is_not_told_to_raise_its_lr():
    # a CS336 LM (LR 1e-3, cosine, healthy) from step 2,510 on: its loss wobbles 1.6-1.8 under
    # its decaying LR, "barely below the first loss" of the excerpt; that first loss is not
    # where training began (2,500 steps were never logged), so it says nothing about the LR
    from detector_helpers import tune_records
    records = tune_records(CS336)
    tail = records[len(records) // 2:]
    assert tail[0].step == 2510
    assert not [a for a in _lr_changing(one_at_a_time(tail)[1]) if a.kind == "plateau"]
    # without the test (every first loss taken as the start of training) it was told x10
    from losswatch.detectors import Engine
    eng = Engine("r", params={"plateau": {"from_start": 1e18}})
    up = [a for rec in tail for a in eng.update(rec)]
    assert [a.action.params["factor"] for a in raised(up, "plateau", "warning")] == [10.0]


def test_a_flat_loss_logged_from_the_start_of_training_is_still_a_too_small_lr():
    # the same judgement on a log that begins at step 0 (the plateau's own example): first loss,
    # a tiny LR, flat for 400 steps
    import math
    losses = [2.5 + 0.003 * math.sin(s) for s in range(400)]
    up = raised(replay(losses, lrs=[1e-6] * 400)[1], "plateau", "warning")
    assert [(a.step, a.action.params["factor"]) for a in up] == [(200, 10.0)]
    # ... and on one logged every 10 steps from step 10 (the first record one interval in)
    up = raised(replay(losses[:60] * 1, lrs=[1e-6] * 60, steps=[10 * (s + 1) for s in range(60)])[1],
                "plateau", "warning")
    assert [a.action.params["factor"] for a in up] == [10.0]


# -- raw run-away: a log that begins mid-run shows no descent until one stands out of the noise --
def test_the_middle_of_a_memorised_run_is_not_a_run_away_from_its_raw_best():
    # a healthy CNN (Adam, base LR) cut at its middle row: per-batch losses of 0.01-0.15 around
    # 0.065. The excerpt's slow trend starts on its first draw (0.10) and settles for ~50
    # records, which read as a "fresh descent"; three rises to 0.109 = 3.8x the lucky 0.0286 at
    # step 339 were "LR too high, cut it x0.1" (1.9-3.1 noise units below the first draw)
    records = list(read_run(RUNS / "cnn-adam-constant-x1-s0.csv"))[300:]
    assert records[0].step == 300
    assert [a for a in _lr_changing(one_at_a_time(records)[1]) if a.kind == "divergence"] == []
    # the same losses from step 0 are a descent from the untrained loss: the rule still reads them
    renumbered = [dataclasses.replace(r, step=r.step - 300) for r in records]
    rules = [a.evidence.get("rule") for a in raised(one_at_a_time(renumbered)[1], "divergence", "warning")]
    assert rules[:1] == ["raw_runaway"]


def test_a_run_away_after_a_real_descent_is_caught_in_an_excerpt_too():
    # the fine-tune of raw_runaway's example, logged from step 1000 (an excerpt): the fall
    # 15 -> 2.4 is 12 noise units, a descent however the log began
    losses = [15, 13, 3.8, 2.4, 1.4, 5.8, 7.1, 10.0]
    alerts = raised(replay(losses, steps=list(range(1000, 1008)))[1], "divergence", "warning")
    assert [(a.step, a.evidence["rule"]) for a in alerts] == [(1007, "raw_runaway")]


# -- slow progress: no logged LR, no claim about the LR's pace -----------------------------------
def test_a_steady_descent_without_a_logged_lr_is_not_told_to_raise_it():
    # the steady descent that is "the LR is limiting training" at step 512 when the LR is logged
    # (test_the_same_descent_at_a_steady_pace_is_still_a_too_small_lr): without the LR column a
    # warm-up or a decay that explains the pace cannot be ruled out
    assert raised(replay(_epoch_drop(True))[1], "plateau", "warning") == []
    assert [a.step for a in raised(replay(_epoch_drop(True), lrs=[2e-5] * 700)[1], "plateau", "warning")] == [512]


# -- early stall: "no new best for a while" is counted in records too ----------------------------
@pytest.mark.parametrize("unit", (1, 10))
def test_an_early_stall_is_judged_at_the_same_record_whatever_the_step_unit(unit):
    # early_stall's own example (a fast drop, then flat while the grad-norm fades) with its step
    # column in other units: a new best of a noisy level is a matter of records; counted in
    # steps alone, x10 steps made "20 steps without one" two records, and a healthy GPT-2
    # speedrun with its steps x10 was told to cut its LR and restart at step 3,140
    r = random.Random(0)
    losses = [4.6 if s < 5 else 2.9 + r.gauss(0, 0.05) for s in range(200)]
    gns = [3.0 if s < 10 else 0.1 for s in range(200)]
    steps = [unit * s for s in range(200)]
    alerts = raised(replay(losses, gns=gns, lrs=[0.03] * 200, steps=steps)[1], "grad_vanishing", "warning")
    assert [(a.detector, a.step // unit) for a in alerts] == [("early_stall", 64)]


# -- dead: a healthy loss that passes through ln(k), a converged evaluation seen mid-run --------
PINN = "histories/macro1027__simple-pendulum-pinn__lightning-logs-version-32-metrics-csv.csv"


def _dead(alerts):
    return [(a.step, a.action.type) for a in raised(alerts, "dead", "warning")]


def test_a_noisy_loss_descending_through_ln_k_is_not_a_collapse_onto_it():
    # a healthy PINN (per-step losses with ~5 % noise) with 1 added to its loss descends through
    # 1.0986 = ln 3 around step 470; three records in a row (1.09881, 1.09848, 1.09875) land
    # within half a unit of the 4th digit of it, and were "dead, stop" at step 472
    records = [dataclasses.replace(r, loss=r.loss + 1) for r in tune_records(PINN)[:600]]
    assert records[472].step == 472 and abs(records[472].loss - 1.0987) < 1e-4
    assert _dead(one_at_a_time(records)[1]) == []
    assert _dead(in_batches(records, 64)[1]) == []
    # a network that collapses onto the uniform output prints ln(k) itself, record after record
    assert _dead(replay([5.7976, 1.0986, 1.0986, 1.0986])[1]) == [(3, "stop")]


# a GPT-2 (350M) run's validation loss, evaluated every 250 steps, converged at the end of a long
# decay: it falls by 1e-4 per evaluation or prints the same five digits (a public llm.c log)
CONVERGED_EVALS = [2.9296, 2.9294, 2.9292, 2.9290, 2.9289, 2.9287, 2.9286, 2.9285, 2.9284, 2.9283,
                   2.9283, 2.9282, 2.9282, 2.9282, 2.9282, 2.9281, 2.9282]


def test_a_converged_validation_loss_in_a_log_that_begins_mid_run_is_not_frozen():
    # the second half of the log: evaluations only, from step 56,000. Same to four significant
    # digits six times in a row, and "never fell below 0.9x its first value" because the first
    # value the log shows is already the converged one: "dead, stop"
    steps = [56000 + 250 * k for k in range(len(CONVERGED_EVALS))]
    assert _dead(replay(vals=CONVERGED_EVALS, steps=steps)[1]) == []
    # evaluations logged from step 0 that never left their first value are still frozen
    frozen = [2.9296] * 8
    assert _dead(replay(vals=frozen, steps=[250 * k for k in range(8)])[1]) == [(1250, "stop")]


# -- dead: a training loss repeated on evaluation rows while the evaluations move -----------------
T5_CARD = "histories/wenxin-jiang__cs577-nlp__model-card-sandipan1994-t5-small-entailement-writer-t5-base.csv"


def test_a_training_loss_repeated_on_every_evaluation_row_while_the_evaluations_move_is_not_dead():
    # a Hugging Face model card's table: the Trainer prints the training loss of its last logging
    # step (every 500 steps) on each evaluation row (every 42 steps), so 1.2044 stands on 12 rows
    # while the validation loss falls 0.7267 -> 0.6676: "dead, stop" at its sixth row
    records = tune_records(T5_CARD)
    assert [r.loss for r in records[11:23]] == [1.2044] * 12
    assert records[11].val_loss > records[22].val_loss + 0.05
    assert _dead(one_at_a_time(records)[1]) == []
    assert _dead(in_batches(records, 64)[1]) == []
    # the same repeated losses while the evaluations stay put too are a constant output
    frozen = [dataclasses.replace(r, val_loss=records[11].val_loss) for r in records[11:23]]
    assert _dead(one_at_a_time(frozen)[1]) == [(frozen[5].step, "stop")]
    assert _dead(in_batches(frozen, 4)[1]) == [(frozen[5].step, "stop")]
