"""LR too low on logs without an LR column: slow_progress judges a near-linear fall over two
doublings of the step (``unlogged``), on a real log of the corpus's tune part (bench/real/,
provenance in bench/real/SOURCES.md) and on the shapes it must leave alone. The holdout part is
never read here."""

import math
from dataclasses import replace

from detector_helpers import one_at_a_time, raised, tune_records
from losswatch.detectors import Engine
from losswatch.detectors.base import drive
from losswatch.detectors.slow_progress import SlowProgressDetector
from losswatch.detectors.types import Record

# a 27M-parameter GPT trained with SGD at an LR ~100x below the best of its sweep, no LR logged
MAINRUN_SGD = "histories/arshchawla21__mainrun__sweeps-1-optim-sgd-lr0.0003-mainrun-log.csv"
# a healthy DPO fine-tune whose LR decays to ~1 % of its peak (its LR column dropped below)
DPO_DECAY = "histories/silver-8ce__llamatest__trainer-state.csv"


def _raises(alerts):
    return [a for a in raised(alerts, min_severity="warning") if a.action.direction == "up"]


def test_a_language_model_falling_linearly_from_its_start_without_an_lr_column_is_told_to_raise_it():
    # 9.77 -> 9.58 by step 256 -> 9.40 by 512: the second doubling made 93 % of all the
    # progress before it, the first 110 %; a working LR drops fast and then bends
    up = _raises(one_at_a_time(tune_records(MAINRUN_SGD))[1])
    assert [(a.step, a.detector, a.action.params["factor"]) for a in up[:1]] == [(512, "slow_progress", 3.0)]
    assert "no LR logged" in up[0].message and up[0].evidence["lr_logged"] is False
    # the rule's bar above the run's pace: silent, as before the rule judged logs without an LR
    eng = Engine("r", params={"slow_progress": {"unlogged": 1.2}})
    strict = [a for rec in tune_records(MAINRUN_SGD) for a in eng.update(rec)]
    assert not [a for a in _raises(strict) if a.detector == "slow_progress"]


def test_the_batch_path_gives_the_same_alerts_on_a_log_without_an_lr():
    recs = tune_records(MAINRUN_SGD)
    one = [(a.id, a.severity, a.last_step) for a in one_at_a_time(recs)[1]]
    eng = Engine("r")
    batch = [(a.id, a.severity, a.last_step) for a in eng.update_batch(recs)]
    assert batch == one


def test_an_excerpt_of_the_same_run_is_not_judged_without_its_start():
    # the last 70 % of the log: its first loss (9.45 at step 566) is no start level, and the
    # healthy tune logs cut like this reach h 2-12 against it
    recs = tune_records(MAINRUN_SGD)
    cut = recs[len(recs) * 3 // 10:]
    assert not [a for a in _raises(one_at_a_time(cut)[1]) if a.detector == "slow_progress"]


def test_a_decayed_fine_tune_without_its_lr_column_is_not_told_to_raise_it():
    recs = [replace(r, lr=None) for r in tune_records(DPO_DECAY)]
    assert not [a for a in one_at_a_time(recs)[1] if a.detector == "slow_progress"]


def _run(loss, n=1200):
    return [Record(s, loss(s)) for s in range(1, n)]


def test_only_a_near_linear_fall_is_judged_without_an_lr():
    linear = drive(SlowProgressDetector(), _run(lambda s: 2.3 - 0.0004 * s))
    assert [(a.step, a.action.params["factor"]) for a in linear[:1]] == [(512, 3.0)]
    # an exponential descent with a time constant of 300 steps: h = exp(-c / 300) at every
    # checkpoint, 0.43 at 256 (>= ratio 0.22, so raised with an LR logged), < 0.5 without
    tau = 300.0
    expo = _run(lambda s: 1.0 + 1.3 * math.exp(-s / tau))
    assert drive(SlowProgressDetector(), expo) == []
    assert drive(SlowProgressDetector(), [replace(r, lr=1e-3) for r in expo])  # the LR says it
    # a warm-up nobody logged: the fall speeds up as the LR ramps (quadratic in the step)
    warm = _run(lambda s: 2.3 - 1.5e-6 * s * s, 900)
    assert drive(SlowProgressDetector(), warm) == []
    assert drive(SlowProgressDetector(speed_up=100.0), warm)  # read as a pace without that test


def test_an_excerpt_under_a_decaying_lr_is_not_judged_against_its_first_loss():
    # a healthy GPT-2 124M run (public log, tune part) cut to its last 80 %: its first loss is
    # 3.9 at step ~2,300, not the untrained model's, while the LR decays; the fall since read as
    # "3.53 -> 3.37 since step 5793, 253 % of all the progress before it: raise the LR x3"
    import os
    from pathlib import Path

    from losswatch.service.readers import read_run
    public = Path(os.environ.get("LOSSWATCH_PUBLIC_LOGS",
                                 Path(__file__).resolve().parents[2] / "shared" / "data" / "public-logs"))
    recs = list(read_run(public / "mng-llmc-gpt2-124m.csv"))
    cut = recs[len(recs) // 5:]
    assert cut[0].lr is not None and cut[0].step > 1000
    assert not [a for a in one_at_a_time(cut)[1] if a.detector == "slow_progress"]
