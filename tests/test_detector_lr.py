"""LR anomalies: a zero LR while training, a >10x jump in one step, a broken LR value."""

import math

from detector_helpers import raised, replay


def test_lr_dropping_to_zero_mid_run_warns_after_three_records():
    lrs = [1e-3] * 50 + [0.0] * 10 + [1e-3] * 5
    # a loss that still moves (a frozen one is a dead run, whose verdict withholds LR raises)
    _, alerts = replay([2.0 + 0.01 * math.sin(s) for s in range(65)], lrs=lrs)
    lr = raised(alerts, "lr_anomaly")
    assert [(a.step, a.severity) for a in lr] == [(52, "warning")]
    assert lr[0].action.type == "scale_lr" and lr[0].action.params["factor"] > 1
    assert any(a.kind == "lr_anomaly" and a.resolved_step == 60 for a in alerts)


def test_schedule_that_decays_to_zero_at_its_end_is_healthy():
    n = 1000
    lrs = [1e-3 * 0.5 * (1 + math.cos(math.pi * s / (n - 1))) for s in range(n)]
    assert raised(replay([2.0] * n, lrs=lrs)[1], "lr_anomaly") == []
    # ...but a schedule that reaches ~0 far too early (then trains at 0 for 70% of the run) warns
    short = [1e-3 * max(0.0, 1 - s / 300) for s in range(n)]
    lr = raised(replay([2.0] * n, lrs=short)[1], "lr_anomaly")
    assert len(lr) == 1 and 300 <= lr[0].step <= 340


def test_warmup_from_zero_is_fine():
    lrs = [1e-3 * min(1.0, s / 100) for s in range(500)]
    assert raised(replay([2.0] * 500, lrs=lrs)[1], "lr_anomaly") == []


def test_lr_jump_of_more_than_10x_in_one_step_but_not_a_warm_restart():
    lrs = [1e-3] * 100 + [2e-2] * 50
    lr = raised(replay([2.0] * 150, lrs=lrs)[1], "lr_anomaly")
    assert [a.step for a in lr] == [100] and lr[0].action.params["factor"] == 0.05
    # SGDR: cosine to ~0 then back to the same peak, every 100 steps
    sgdr = [1e-3 * 0.5 * (1 + math.cos(math.pi * (s % 100) / 100)) + 1e-7 for s in range(500)]
    assert raised(replay([2.0] * 500, lrs=sgdr)[1], "lr_anomaly") == []
    # a 10x step *decay* is healthy
    assert raised(replay([2.0] * 200, lrs=[1e-2] * 100 + [1e-3] * 100)[1], "lr_anomaly") == []


def test_nan_or_negative_lr_is_critical():
    lr = raised(replay([2.0] * 10, lrs=[1e-3] * 5 + [math.nan] * 5)[1], "lr_anomaly")
    assert [(a.step, a.severity) for a in lr] == [(5, "critical")]
    lr = raised(replay([2.0] * 10, lrs=[1e-3] * 5 + [-1e-3] * 5)[1], "lr_anomaly")
    assert [(a.step, a.severity) for a in lr] == [(5, "critical")]


def test_an_lr_jump_is_a_rate_per_step_across_the_gap_between_logged_rows():
    # a linear warm-up logged every 50 steps: 44x between two rows, ~1.08x per step
    steps = [0, 50, 100, 150, 200]
    lrs = [1e-6, 4.4e-5, 8.8e-5, 1.3e-4, 1.3e-4]
    _, alerts = replay([3.0, 2.9, 2.8, 2.75, 2.7], lrs=lrs, steps=steps)
    assert raised(alerts, "lr_anomaly") == []
    # the same 44x within one step is a jump
    _, alerts = replay([3.0, 2.9, 2.8, 2.75, 2.7], lrs=lrs, steps=[0, 1, 2, 3, 4])
    jump = raised(alerts, "lr_anomaly")
    assert jump and jump[0].step == 1 and jump[0].action.type == "scale_lr"


def test_an_lr_decayed_to_a_min_lr_at_the_bands_edge_that_it_then_holds_is_no_zero_lr():
    # ReduceLROnPlateau x0.1 every 20 records from 1e-3 down to min_lr=1e-6: exactly 1e-3 of the
    # peak, the first LR in the ~0 band, held from there on
    lrs = [max(1e-3 * 0.1 ** (s // 20), 1e-6) for s in range(400)]
    losses = [1.0 + 2.0 * math.exp(-s / 50) + 0.01 * math.sin(s) for s in range(400)]
    assert raised(replay(losses, lrs=lrs)[1], "lr_anomaly") == []
    # stepping on through the band is a per-batch-stepped decay's shape too: judged as a decay
    lrs = [1e-3 * 0.1 ** (s // 20) for s in range(400)]
    assert [a.severity for a in raised(replay(losses, lrs=lrs)[1], "lr_anomaly")] == ["warning"]
