"""Early stall: stuck right after a fast start at a large LR (grad-norm faded, loss flat)."""

import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector_helpers import raised, replay
from losswatch.detectors import Engine
from losswatch.detectors.types import Record


def stuck_run(n=300, seed=0, first_step=0, lr=0.03, level=2.8, nan_every=0):
    """Loss 4.6 -> ~level within 10 steps then flat; grad-norm 3 -> ~0.15 (20x down)."""
    r = random.Random(seed)
    steps, losses, gns, lrs = [], [], [], []
    for k in range(n):
        steps.append(first_step + k)
        x = 4.6 if k == 0 else level + (4.6 - level) * math.exp(-k / 3) + r.gauss(0, 0.05)
        if nan_every and k % nan_every == nan_every - 1:
            x = math.nan
        losses.append(x)
        g = 3.0 * math.exp(-k / 8) + 0.15
        gns.append(g * math.exp(r.gauss(0, 0.2)))
        lrs.append(lr)
    return steps, losses, gns, lrs


def _stalls(alerts):
    return [a for a in raised(alerts) if a.detector == "early_stall"]


def test_a_run_stuck_early_gets_a_cut_with_a_restart_from_its_first_step():
    steps, losses, gns, lrs = stuck_run(first_step=7)
    _, alerts = replay(losses, gns, lrs, steps=steps)
    out = _stalls(alerts)
    assert len(out) == 1
    a = out[0]
    assert a.kind == "grad_vanishing" and a.severity == "warning"
    assert a.action.type == "scale_lr" and a.action.params == {"factor": 0.1}
    assert a.evidence["restart_step"] == 7
    assert 20 <= a.step - 7 <= 120  # soon after the stall, not at once
    assert a.evidence["typical"] * 6 <= a.evidence["peak_typical"]


def test_a_converging_classifier_whose_grad_norm_fades_is_quiet():
    # the loss goes far below half its start: converged, not stuck
    steps, losses, gns, lrs = stuck_run(level=0.3)
    assert _stalls(replay(losses, gns, lrs, steps=steps)[1]) == []


def test_a_loss_still_falling_steadily_is_quiet_even_with_a_faded_grad_norm():
    # an LM in its first hundreds of steps (llm.c GPT-2: grad-norm 15 -> 1, loss 11 -> 7 still falling)
    r = random.Random(1)
    n = 600
    losses = [11.0 - 4.0 * (1 - math.exp(-s / 300)) + r.gauss(0, 0.02) for s in range(n)]
    gns = [15.0 * math.exp(-s / 20) + 0.8 for s in range(n)]
    assert _stalls(replay(losses, gns, [6e-4] * n)[1]) == []


def test_a_run_that_blew_up_first_is_left_to_the_divergence_rules():
    steps, losses, gns, lrs = stuck_run()
    losses[1:4] = [9.0, 12.0, 8.0]
    assert _stalls(replay(losses, gns, lrs, steps=steps)[1]) == []


def test_a_decayed_lr_is_not_a_large_lr():
    steps, losses, gns, lrs = stuck_run()
    lrs = [0.03] * 5 + [0.01] * (len(lrs) - 5)
    assert _stalls(replay(losses, gns, lrs, steps=steps)[1]) == []


def test_the_episode_resolves_once_the_loss_moves_on_after_a_restart():
    steps, losses, gns, lrs = stuck_run(300)
    # the restart at a lower LR: back to the first loss, then down past the stuck level
    s2, l2, g2, lr2 = stuck_run(300, seed=1, first_step=300, level=2.0, lr=0.009)
    _, alerts = replay(losses + l2, gns + g2, lrs + lr2, steps=steps + s2)
    out = _stalls(alerts)
    assert len(out) == 1 and out[0].step < 300
    closed = [a for a in alerts if a.id == out[0].id and a.resolved_step is not None]
    assert closed and 300 <= closed[0].resolved_step < 400


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), cut=st.integers(1, 200), nan_every=st.sampled_from([0, 7, 31]),
       first=st.integers(0, 5))
def test_both_paths_and_a_restore_agree_on_stuck_runs(seed, cut, nan_every, first):
    steps, losses, gns, lrs = stuck_run(260, seed=seed, first_step=first, nan_every=nan_every)
    recs = [Record(s, x, g, lr) for s, x, g, lr in zip(steps, losses, gns, lrs)]
    e1 = Engine("r")
    a1 = [a.to_dict() for r in recs for a in e1.update(r)]
    e2 = Engine("r")
    a2 = []
    for k in range(0, len(recs), cut):
        a2 += [a.to_dict() for a in e2.update_batch(recs[k:k + cut])]
        e2 = Engine.from_bytes(e2.to_bytes())
    assert a1 == a2
    assert any(a["detector"] == "early_stall" for a in a1)


def test_a_loss_flat_at_its_first_value_is_left_to_the_vanishing_gradient_rule():
    steps, losses, gns, lrs = stuck_run()
    losses = [4.6] * len(losses)
    assert _stalls(replay(losses, gns, lrs, steps=steps)[1]) == []
