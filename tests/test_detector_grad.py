"""Grad-norm explosion and vanishing gradients."""

import math
import random

from detector_helpers import raised, replay


def _steady_gn(n, seed=0, level=1.0):
    r = random.Random(seed)
    return [level * math.exp(r.gauss(0, 0.1)) for _ in range(n)]


def test_grad_norm_explosion_is_an_early_warning_with_clip_advice():
    gns = _steady_gn(100)
    gns[60] = 40.0
    _, alerts = replay([2.0] * 100, gns)
    ex = raised(alerts, "grad_explosion")
    assert [a.step for a in ex] == [60]
    assert ex[0].severity == "warning" and ex[0].action.type == "clip_grad_norm"
    assert 1.0 < ex[0].action.params["max_norm"] < 5.0
    assert any(a.kind == "grad_explosion" and a.resolved_step == 61 for a in alerts)


def test_grad_norm_doubling_and_slow_drift_are_quiet():
    gns = _steady_gn(300)
    gns[100] *= 3.0
    gns = [g * (1.0 + s / 100) for s, g in enumerate(gns)]  # 4x over 300 steps
    assert raised(replay([2.0] * 300, gns)[1], "grad_explosion") == []


def test_same_step_loss_spike_is_left_to_the_spike_detector():
    gns = _steady_gn(100)
    gns[60] = 40.0
    losses = [2.0] * 100
    losses[60] = 4.0
    alerts = replay(losses, gns)[1]
    assert raised(alerts, "grad_explosion") == [] and [a.step for a in raised(alerts, "spike")] == [60]


def test_vanishing_gradients_need_patience_and_a_stalled_loss():
    _, alerts = replay([0.69] * 60, [1e-9] * 60)
    van = raised(alerts, "grad_vanishing")
    assert [a.step for a in van] == [19] and van[0].action.type == "none"
    # a loss that keeps improving means the logged norm is not the whole story: quiet
    losses = [2.0 * 0.97 ** s for s in range(60)]
    assert raised(replay(losses, [1e-9] * 60)[1], "grad_vanishing") == []
    # relative collapse (1e-5 of its early level) counts too
    gns = [1.0] * 30 + [1e-5] * 40
    assert [a.step for a in raised(replay([0.69] * 70, gns)[1], "grad_vanishing")] == [49]
