"""Plateau family: the LR explains what a flat or slow loss means."""

import math
import random
import sys
from pathlib import Path

from detector_helpers import healthy_curve, raised, replay
from losswatch.detectors import Batch, Engine
from losswatch.detectors.types import Record

BENCH_RUNS = Path(__file__).resolve().parent.parent / "bench" / "runs"
sys.path.insert(0, str(BENCH_RUNS.parent))
from labels import read_run as read_bench_run  # noqa: E402


def test_converged_plateau_at_the_end_of_a_decayed_schedule_is_info():
    n = 3000
    losses, gns, _ = healthy_curve(n, seed=6, tau=40)
    lrs = [1e-3 * 0.5 * (1 + math.cos(math.pi * s / n)) for s in range(n)]
    eng, alerts = replay(losses, gns, lrs)
    assert raised(alerts, min_severity="warning") == []
    plat = raised(alerts, "plateau")
    assert plat and all(a.severity == "info" for a in plat)
    # the plateau is reported once, then updated (same id) to "converged" as the LR decays
    assert any(a.kind == "plateau" and "converged" in a.message for a in alerts)
    assert any("converged" in a.message for a in eng.active_alerts)
    assert eng.health == "ok" and eng.recommendation is None


def test_flat_loss_at_a_tiny_lr_says_raise_it():
    r = random.Random(0)
    losses = [2.3 * (1 + r.gauss(0, 0.005)) for _ in range(600)]
    gns = [0.5 * math.exp(r.gauss(0, 0.05)) for _ in range(600)]
    plat = raised(replay(losses, gns, [1e-6] * 600)[1], "plateau", "warning")
    assert plat and plat[0].action.type == "scale_lr" and plat[0].action.params["factor"] > 1


def test_slow_linear_descent_says_the_lr_is_limiting():
    r = random.Random(1)
    losses = [(2.3 - 0.0015 * s) * (1 + r.gauss(0, 0.01)) for s in range(700)]
    plat = raised(replay(losses, lrs=[1e-4] * 700)[1], "plateau", "warning")
    assert [a.detector for a in plat] == ["slow_progress"]
    assert plat[0].action.params["factor"] > 1 and plat[0].step in (256, 512)


def test_a_healthy_fast_then_flat_curve_is_not_slow():
    # an exponential descent has h = exp(-c / tau) at checkpoint c: quiet once c >~ 1.4 tau.
    # Healthy runs on the benchmark are all well past that by step 256 (tau <~ 50 steps).
    losses, gns, lrs = healthy_curve(3000, seed=7, tau=50)
    assert raised(replay(losses, gns, lrs)[1], min_severity="warning") == []
    losses, gns, lrs = healthy_curve(3000, seed=7, tau=300)  # still far from its floor at 512
    assert [a.detector for a in raised(replay(losses, gns, lrs)[1], min_severity="warning")] == ["slow_progress"]


def test_stuck_at_chance_after_a_blow_up_is_a_lost_run_not_a_small_lr():
    r = random.Random(2)
    losses = [2.3, 40.0, 150.0, 60.0, 9.0] + [2.31 * (1 + r.gauss(0, 0.01)) for _ in range(400)]
    alerts = replay(losses, lrs=[3.0] * len(losses))[1]
    lost = [a for a in raised(alerts, "divergence") if a.evidence.get("rule") in ("first_loss", "lost")]
    assert lost and lost[0].action.params["factor"] < 1
    assert not [a for a in raised(alerts, "plateau", "warning") if a.action.params.get("factor", 0) > 1]


def test_period_two_oscillation_under_a_constant_lr_but_not_a_cyclic_one():
    losses = [2.0 + (0.5 if s % 2 else 0.0) for s in range(300)]
    osc = raised(replay(losses, lrs=[0.1] * 300)[1], "oscillation")
    assert osc and osc[0].action.params["factor"] < 1
    cyc = [0.01 + 0.09 * (1 - abs((s % 40) / 20 - 1)) for s in range(300)]
    assert raised(replay(losses, lrs=cyc)[1], "oscillation") == []


def test_a_steady_fall_after_a_blow_up_is_a_recovery_not_a_small_lr():
    r = random.Random(4)
    # an LR-too-high start: up to 3x the first loss within 10 steps, back below it by step 60,
    # then a long, steady fall (from where the blow-up left it)
    def loss(s):
        if s <= 10:
            return 2.3 + 0.46 * s
        if s <= 60:
            return 6.9 - (6.9 - 2.2) * (s - 10) / 50
        return max(0.5, 2.2 - 0.002 * (s - 60))

    losses = [loss(s) for s in range(700)]
    losses = [x * (1 + r.gauss(0, 0.01)) for x in losses]
    alerts = replay(losses, lrs=[0.5] * len(losses))[1]
    assert not [a for a in raised(alerts, "plateau", "warning") if a.detector == "slow_progress"]
    # the same fall from the start (no blow-up) is the slow, LR-limited descent it flags
    steady = [max(0.5, 2.3 - 0.003 * s) * (1 + r.gauss(0, 0.01)) for s in range(700)]
    alerts = replay(steady, lrs=[0.5] * len(steady))[1]
    assert [a.detector for a in raised(alerts, "plateau", "warning")] == ["slow_progress"]


def test_a_fast_fall_after_a_relapse_is_a_recovery_not_a_small_lr():
    r = random.Random(5)
    # a quick start to 0.3, a relapse to 0.8 around step 128 (never above the first loss, so
    # no blow-up), then a fast fall back: a quarter of "all progress before" is made between
    # steps 128 and 256 only because the checkpoint sat on the relapse
    def loss(s):
        if s <= 60:
            return 2.3 - 2.0 * s / 60
        if s <= 128:
            return 0.3 + 0.5 * (s - 60) / 68
        return max(0.05, 0.8 - 0.7 * (s - 128) / 100)

    losses = [loss(s) * (1 + r.gauss(0, 0.02)) for s in range(600)]
    alerts = replay(losses, lrs=[0.5] * len(losses))[1]
    assert not [a for a in raised(alerts, "plateau", "warning") if a.detector == "slow_progress"]


def _warm_up_past_the_edge(lr_peak, seed=0):
    """A warm-up to ``lr_peak``: the loss is lowest (4.1) at step 90, then climbs to 4.8 and stays."""
    r = random.Random(seed)
    steps = list(range(10, 3000, 10))
    losses = [(5.2 - 0.012 * s if s <= 90 else min(4.8, 4.1 + 0.006 * (s - 90))) + r.gauss(0, 0.05) for s in steps]
    lrs = [min(lr_peak, lr_peak * s / 250) for s in steps]
    return losses, lrs, steps


def test_a_loss_that_climbs_back_once_the_lr_rose_is_an_lr_too_high_not_too_low():
    losses, lrs, steps = _warm_up_past_the_edge(0.1)
    alerts = replay(losses, lrs=lrs, steps=steps)[1]
    osc = raised(alerts, "oscillation", "warning")
    assert [a.evidence["rule"] for a in osc] == ["relapse"] and osc[0].action.params["factor"] < 1
    assert not [a for a in alerts if a.action.direction == "up"]
    # the same curve at a constant LR: no LR rise explains it, so no relapse (a lost or
    # drifting run is the divergence detector's to judge)
    alerts = replay(losses, lrs=[0.1] * len(losses), steps=steps)[1]
    assert not [a for a in raised(alerts, "oscillation") if a.evidence["rule"] == "relapse"]


def test_a_run_that_barely_moved_is_not_read_as_climbing_back():
    # flat at a tiny LR: its "progress" (first loss - raw best) is two noise units, and the level
    # sits above that lucky best by half of it by chance alone; only the noise test keeps the
    # plateau's "the LR is too small" (without it: an info "lower the LR")
    r = random.Random(1)
    losses = [2.31] + [2.3 + r.gauss(0, 0.008) for _ in range(799)]

    def first_plateau(**params):
        eng = Engine("t", params={"plateau": params})
        out = [a for s, x in enumerate(losses) for a in eng.update(Record(s, x, 0.5, 1e-6))]
        return raised(out, "plateau")[0]

    assert (first_plateau().severity, first_plateau().action.params) == ("warning", {"factor": 10.0})
    assert first_plateau(climb_z=0.0).severity == "info"


def test_a_one_cycle_run_too_slow_between_its_ramp_and_its_decay_is_told_to_raise_the_lr():
    # one-cycle: the LR ramps up to step 180, then decays to 0 at step 600. At step 256 the LR
    # was still rising since the checkpoint (the pace is the schedule's), by step 512 it has
    # decayed below 0.3x its peak: only a checkpoint between them (362) can judge the pace
    r = random.Random(3)
    lrs = [1e-4 * s / 180 if s <= 180 else 1e-4 * 0.5 * (1 + math.cos(math.pi * (s - 180) / 420))
           for s in range(600)]
    losses = [(0.5 + 1.8 * math.exp(-s / 400)) * (1 + r.gauss(0, 0.005)) for s in range(600)]

    def slow(**params):
        eng = Engine("t", params={"slow_progress": params})
        out = [a for s in range(600) for a in eng.update(Record(s, losses[s], 1.0, lrs[s]))]
        return [(a.step, a.action.params) for a in raised(out) if a.detector == "slow_progress"]

    assert slow() == [(363, {"factor": 3.0})]
    assert slow(per_doubling=1) == []


def test_the_fall_after_a_relapse_is_a_recovery_not_a_slow_pace():
    # the benchmark's cnn SGD run at 10x LR (warm-up into cosine): its loss dips to ~1.1 around
    # step 30, climbs back to ~2.1 as the LR peaks (the oscillation detector's relapse) and falls
    # again as the decay lowers the LR. Its level never went below ~1.7 (it lags a short dip):
    # only the raw best shows that the steady fall after step 182 is a recovery
    cols = read_bench_run(BENCH_RUNS / "cnn-sgd-warmup_cosine-x10-s0.csv")

    def slow_progress(**params):
        eng = Engine("t", params={"slow_progress": params})
        return [a.step for a in raised(eng.update_batch(Batch.from_columns(**cols))) if a.detector == "slow_progress"]

    assert slow_progress() == []
    # without the test: "raise the LR x3" (the annealing test, a fall that sped up as the decay
    # cut the LR, silences it on its own as well)
    assert slow_progress(given_back=1e9, anneal=0.0) == [363]
    assert slow_progress(given_back=1e9) == []


def test_a_noisy_loss_barely_below_its_first_draw_is_not_told_to_raise_the_lr():
    # a loss at its noise floor (+-30% per record, uniform) whose first draw happened to be 4%
    # above the mean: one draw of so noisy a loss is no start level, so "barely below the first
    # loss" means nothing; the noisy plateau is an info with a lower LR
    def plateaus(params=None):
        rng = random.Random(3)
        eng = Engine("r", params=params)
        out = []
        for s in range(400):
            x = 1.04 if s == 0 else 1.0 + 0.6 * (rng.random() - 0.5)
            out += eng.update(Record(s, x, lr=1e-6))
        return [(a.step, a.severity, a.action.params["factor"]) for a in out if a.kind == "plateau"][:1]

    assert plateaus() == [(385, "info", 0.3)]
    # judged as quiet, the same loss is "the LR is too small"
    assert plateaus({"plateau": {"noisy": 1.0}}) == [(385, "warning", 10.0)]


def test_slow_progress_checkpoints_past_2_to_the_53_are_the_same_in_a_batch():
    # steps around 2^62.5 (a checkpoint with two per doubling): a float64 step rounds by ~1,000
    # there, so the batch screen must find the crossing with exact integers, as one record does
    from losswatch.detectors.slow_progress import checkpoint_index
    start = math.isqrt(2 ** 125) - 1500
    recs = [Record(start + k, 2.0 - 0.0001 * k) for k in range(3000)]
    assert sum(checkpoint_index(r.step, 2) != checkpoint_index(r.step - 1, 2) for r in recs[1:]) == 1
    one, batch = Engine("a"), Engine("b")
    for r in recs:
        one.update(r)
    batch.update_batch(recs)

    def state(e):
        return next(d for d in e._detectors if d.name == "slow_progress").get_state()

    assert state(one) == state(batch)


def test_a_pace_held_over_two_doublings_says_the_lr_is_limiting():
    # the benchmark's RNN Adam run at LR/10: a fast first drop, then a steady fall whose share of
    # the progress grows from doubling to doubling (h 0.13, 0.17, 0.17, 0.19), below the
    # one-doubling line (0.22); its healthy sibling at the tuned LR slows down (h falls)
    def slow_progress(path, **params):
        eng = Engine("t", params={"slow_progress": params})
        out = raised(eng.update_batch(Batch.from_columns(**read_bench_run(path))))
        return [(a.step, a.evidence["pace_held"]) for a in out if a.detector == "slow_progress"]

    assert slow_progress(BENCH_RUNS / "rnn-adam-constant-d10-s0.csv") == [(512, True)]
    assert slow_progress(BENCH_RUNS / "rnn-adam-constant-d10-s0.csv", sustained=1.0) == []
    assert slow_progress(BENCH_RUNS / "rnn-adam-constant-x1-s0.csv") == []
    # a healthy RNN SGD run at 10x LR (held-out seed 6, warm-up into cosine) drops again after
    # step 256: h grows to 0.18 at step 512, but the fall per step sped up (a new phase, not a
    # pace the LR holds)
    assert slow_progress(BENCH_RUNS.parent / "holdout" / "runs" / "rnn-sgd-warmup_cosine-x10-s6.csv") == []
