"""LR too low on logs without an LR column: slow_progress judges a near-linear fall over two
doublings of the step (``unlogged``), on a real log of the corpus's tune part (bench/real/,
provenance in bench/real/SOURCES.md) and on the shapes it must leave alone. The holdout part is
never read here."""

import math
import random
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
    # the message gives the doubling before's own share (9.77 -> 9.58 against 9.77 -> 9.77: ~1.1),
    # not a bare "as much again"
    share = up[0].evidence["share_before"]
    assert 0.5 <= share <= 2.0 and f"made {round(100 * share)}% of the progress before it" in up[0].message
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
    # the log from its 95th record (step 95) on: its first loss is no start level (the healthy
    # tune logs cut to their last 70-80 % reach h 2-12 against theirs). Judged against it, its
    # fall reads 148 % and 77 % over two doublings and was told to raise the LR at step 1024
    recs = tune_records(MAINRUN_SGD)
    cut = recs[len(recs) // 20:]
    assert cut[0].step > 90
    assert not [a for a in _raises(one_at_a_time(cut)[1]) if a.detector == "slow_progress"]


def _healthy_with_a_tail(s):
    # a working LR: a fast exponential drop, then a slow power-law tail
    return 2.0 + 3.0 * math.exp(-s / 60) + 0.3 / (1 + s / 3000)


def test_an_excerpt_at_a_constant_lr_is_not_judged_against_its_first_loss():
    # a constant LR never lowered: the first loss of an excerpt is still not where training
    # began. The run logged from its start is silent; its last 90 % (from step 3,000) read
    # against 2.29 as "raise the LR x3" before an excerpt was judged only by its schedule
    rnd = random.Random(2)
    full = [Record(s, _healthy_with_a_tail(s) + rnd.gauss(0, 0.01), lr=3e-4) for s in range(1, 30001)]
    assert not [a for a in Engine("r").update_batch(full) if a.detector == "slow_progress"]
    for cut in (full[3000:], [replace(r, lr=None) for r in full[3000:]]):
        assert not [a for a in Engine("r").update_batch(cut) if a.detector == "slow_progress"]


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
    # read as a pace without that test and the bounds on the doubling before (its share 3.3, and
    # the fall per step 2.0x its own: both above 1 / unlogged)
    assert drive(SlowProgressDetector(speed_up=100.0, unlogged=0.3), warm)


def _warm_then_exponential(warm_up, tau):
    # loss 2 + 3 exp(-Phi / tau), Phi the LR's integral: s^2 / 2W during a linear warm-up of W
    # steps, s - W / 2 after it. Slow during the warm-up, fast after it, then slowing
    def loss(s):
        phi = s * s / (2 * warm_up) if s < warm_up else s - warm_up / 2
        return 2.0 + 3.0 * math.exp(-phi / tau)
    return loss


def _slow_progress(records):
    return [a for a in Engine("r").update_batch(records) if a.detector == "slow_progress"]


def test_the_end_of_a_warm_up_nobody_logged_is_not_a_linear_pace():
    # the doubling that ends the warm-up falls much faster than the one before (share before it
    # large, fall per step dropping after it): "raise the LR x3" at steps 512-1449 in 14 of these
    # 16 runs when only the lower bounds were checked, one of them already at its floor
    rnd = random.Random(0)
    noise = [rnd.gauss(0, 0.005) for _ in range(6000)]
    told = [(w, tau) for w in (300, 500, 1000, 2000) for tau in (50, 100, 200, 400)
            if _slow_progress([Record(s, _warm_then_exponential(w, tau)(s) + noise[s]) for s in range(1, 6000)])]
    assert told == []


def test_an_lr_logged_on_other_rows_than_the_checkpoints_is_read():
    # a warm-up of 500 steps logged on one row in ten: the warm-up test sees it as it sees an LR
    # logged on every row, instead of judging the run as one without an LR column
    rnd = random.Random(0)
    loss, lr = _warm_then_exponential(500, 300), (lambda s: 1e-3 * min(1.0, s / 500))
    noise = [rnd.gauss(0, 0.005) for _ in range(4000)]
    every = _slow_progress([Record(s, loss(s) + noise[s], lr=lr(s)) for s in range(1, 4000)])
    sparse = _slow_progress([Record(s, loss(s) + noise[s], lr=lr(s) if s % 10 == 1 else None)
                             for s in range(1, 4000)])
    assert [(a.step, a.evidence["lr_logged"]) for a in sparse[:1]] == [(a.step, True) for a in every[:1]]
    assert all("no LR logged" not in a.message for a in sparse)


def test_a_raise_without_an_lr_column_closes_once_the_loss_falls_faster():
    # the advice followed at step 600: the fall per step triples; no LR is logged to show it
    rnd = random.Random(0)
    recs = [Record(s, (3 - 0.0005 * s if s <= 600 else 2.7 - 0.0015 * (s - 600)) + rnd.gauss(0, 0.003))
            for s in range(1, 1700)]
    alerts = _slow_progress(recs)
    assert alerts and alerts[0].step == 512 and alerts[0].evidence["lr_logged"] is False
    assert alerts[-1].resolved_step is not None and 600 < alerts[-1].resolved_step <= 1024
    one = [(a.id, a.last_step, a.resolved_step) for a in one_at_a_time(recs)[1] if a.detector == "slow_progress"]
    assert one == [(a.id, a.last_step, a.resolved_step) for a in alerts]


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
