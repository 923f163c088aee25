"""The Actor: LR scaling that keeps every torch scheduler's future scaled (checked against torch
itself: a scheduler scaled by f at step k must from then on give exactly what the same scheduler
built with all its LRs times f gives), clipping, rollback, stop, and the guardrails."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from losswatch.client.acting import Actor, Status, Verdict

torch.set_num_threads(1)

F = 0.1  # the factor applied
K = 7  # the step at which it is applied
N = 40  # steps compared


def _opt(lr: float, groups: int = 2) -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    return torch.optim.SGD([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(params)], lr=lr, momentum=0.9)


# name -> builder(optimizer, s) where s scales every LR-valued argument of the schedule
SCHEDULES = {
    "LambdaLR": lambda o, s: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0 / (1 + e)),
    "MultiplicativeLR": lambda o, s: torch.optim.lr_scheduler.MultiplicativeLR(o, lambda e: 0.95),
    "StepLR": lambda o, s: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
    "MultiStepLR": lambda o, s: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[3, 12, 20], gamma=0.3),
    "ConstantLR": lambda o, s: torch.optim.lr_scheduler.ConstantLR(o, factor=0.25, total_iters=10),
    "LinearLR": lambda o, s: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=15),
    "ExponentialLR": lambda o, s: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.93),
    "PolynomialLR": lambda o, s: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=30, power=2.0),
    "CosineAnnealingLR": lambda o, s: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=15, eta_min=0.01 * s),
    "CosineAnnealingWarmRestarts": lambda o, s: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=6, T_mult=2, eta_min=0.02 * s
    ),
    "CyclicLR": lambda o, s: torch.optim.lr_scheduler.CyclicLR(o, base_lr=0.05 * s, max_lr=[0.5 * s, 0.8 * s], step_size_up=4),
    "OneCycleLR": lambda o, s: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=[0.9 * s, 1.2 * s], total_steps=N + 5),
    "SequentialLR": lambda o, s: torch.optim.lr_scheduler.SequentialLR(
        o,
        [torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=5),
         torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)],
        milestones=[10],
    ),
    "ChainedScheduler": lambda o, s: torch.optim.lr_scheduler.ChainedScheduler(
        [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.97),
         torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12)]
    ),
}


def _lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [float(g["lr"]) for g in opt.param_groups]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_scale_lr_keeps_every_future_value_of_the_schedule_scaled(name: str) -> None:
    build = SCHEDULES[name]
    ref_opt = _opt(1.0 * F)
    ref = build(ref_opt, F)  # the same schedule with every LR x F from the start
    opt = _opt(1.0)
    sched = build(opt, 1.0)
    actor = Actor(opt, sched, cooldown_steps=0)
    for t in range(N):
        if t == K:
            out = actor.apply(t, {"type": "scale_lr", "factor": F}, {"id": "a", "step": t - 5, "last_step": t})
            assert out.status == "applied"
        if t >= K:
            assert _lrs(opt) == pytest.approx(_lrs(ref_opt), rel=1e-9), f"{name} at step {t}"
        opt.step()
        ref_opt.step()
        sched.step()
        ref.step()
    assert sched.get_last_lr() == pytest.approx(ref.get_last_lr(), rel=1e-9)


def test_scale_lr_with_reduce_on_plateau_keeps_floor_scaled() -> None:
    metrics = [1.0] * 3 + [0.9] + [0.9] * 30
    ref_opt, opt = _opt(F), _opt(1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, patience=2, factor=0.5, min_lr=0.2 * F)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2, factor=0.5, min_lr=0.2)
    actor = Actor(opt, sched, cooldown_steps=0)
    for t, m in enumerate(metrics):
        if t == 2:
            actor.apply(t, {"type": "scale_lr", "factor": F}, {"id": "a", "step": 0, "last_step": 2})
        if t >= 2:
            assert _lrs(opt) == pytest.approx(_lrs(ref_opt), rel=1e-9)
        sched.step(m)
        ref.step(m)
    assert min(_lrs(opt)) == pytest.approx(0.2 * F)  # it did reach the (scaled) floor


def test_tensor_lr_is_scaled_in_place() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    lr = torch.tensor(0.5)
    opt = torch.optim.Adam([p], lr=lr)
    Actor(opt, cooldown_steps=0).apply(3, {"type": "scale_lr", "factor": 0.1}, {"kind": "nan"})
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.05)


def _grads_step(model: torch.nn.Module, opt: torch.optim.Optimizer, scale: float) -> None:
    opt.zero_grad()
    (model(torch.ones(1, 4)).sum() * scale).backward()
    opt.step()


def test_clip_grad_norm_clips_every_following_step_before_the_update() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    actor = Actor(opt, cooldown_steps=0)
    actor.apply(5, {"type": "clip_grad_norm", "max_norm": 0.5}, {"id": "g", "step": 1, "last_step": 5})
    _grads_step(model, opt, scale=1000.0)
    # SGD with lr 1: the update is minus the (clipped) gradient, so its norm is the clip value
    update = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert float(update.norm()) == pytest.approx(0.5, rel=1e-5)
    actor.close()
    before = [p.detach().clone() for p in model.parameters()]
    _grads_step(model, opt, scale=1000.0)
    update = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert float(update.norm()) > 100  # hook removed: no clipping


def test_rollback_calls_the_user_function_and_stop_sets_the_flag() -> None:
    restored: list[int] = []
    stopped: list[bool] = []
    actor = Actor(None, on_rollback=restored.append, cooldown_steps=0)
    out = actor.apply(90, {"type": "rollback", "to_step": 40}, {"id": "d", "kind": "divergence", "step": 60, "last_step": 90})
    assert out.status == "applied" and restored == [40]
    actor.on_stop = lambda: stopped.append(True)
    actor.apply(95, {"type": "stop"}, {"id": "n", "kind": "nan", "step": 95})
    assert actor.stop_requested and stopped == [True]


def test_rollback_without_a_function_is_skipped_not_guessed() -> None:
    out = Actor(None).apply(9, {"type": "rollback", "to_step": 3}, {"kind": "spike", "severity": "warning", "step": 1})
    assert out.status == "refused" and "on_rollback" in out.reason


def test_critical_rollback_without_a_function_stops_training_instead() -> None:
    actor = Actor(None)
    out = actor.apply(9, {"type": "rollback", "to_step": 3}, {"kind": "nan", "severity": "critical", "step": 9})
    assert out.status == "applied" and out.action["type"] == "stop" and actor.stop_requested
    assert "on_rollback" in out.action["reason"]
    kept = Actor(None, stop_when_no_rollback=False)
    out = kept.apply(9, {"type": "rollback", "to_step": 3}, {"kind": "nan", "severity": "critical", "step": 9})
    assert out.status == "refused" and not kept.stop_requested


def test_a_single_noisy_step_waits_for_confirmation() -> None:
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, cooldown_steps=0, min_persist_steps=3)
    one_step = {"id": "s", "kind": "spike", "step": 10, "last_step": 10, "action": {"type": "scale_lr", "factor": 0.5}}
    assert actor.offer_again_at(10) is None
    assert actor.apply(10, one_step["action"], one_step).status == "waiting"
    assert _lrs(opt) == [1.0]
    assert actor.offer_again_at(10) == 10  # waiting for confirmation: offer it at every later log
    # the same advice at the next step confirms it
    assert actor.apply(11, one_step["action"], one_step).status == "applied"
    assert _lrs(opt) == [0.5]
    assert actor.offer_again_at(11) is None


def test_evidence_spanning_several_steps_needs_no_extra_confirmation() -> None:
    opt = _opt(1.0, groups=1)
    alert = {"id": "d", "kind": "divergence", "step": 10, "last_step": 10, "evidence": {"window": 50}}
    assert Actor(opt).apply(10, {"type": "scale_lr", "factor": 0.1}, alert).status == "applied"


def test_cooldown_cap_and_one_action_per_episode() -> None:
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, cooldown_steps=20, max_actions=2)
    a = {"type": "scale_lr", "factor": 0.5}

    def alert(i: int, step: int) -> dict:
        return {"id": f"x{i}", "kind": "divergence", "step": step - 5, "last_step": step}

    assert actor.apply(10, a, alert(1, 10)).status == "applied"
    assert actor.apply(15, a, alert(1, 15)).status == "refused"  # same episode
    out = actor.apply(25, a, alert(2, 25))
    assert out.status is Status.COOLING_DOWN
    assert actor.apply(30, a, alert(3, 30)).status == "applied"
    out = actor.apply(80, a, alert(4, 80))
    assert out.status is Status.CAPPED
    assert _lrs(opt) == [0.25] and actor.n_actions == 2


def test_dry_run_decides_but_changes_nothing() -> None:
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, dry_run=True, cooldown_steps=0)
    out = actor.apply(10, {"type": "scale_lr", "factor": 0.1}, {"id": "d", "step": 1, "last_step": 10})
    assert out.status == "dry_run" and _lrs(opt) == [1.0]
    out = actor.apply(12, {"type": "stop"}, {"id": "n", "kind": "nan", "step": 12})
    assert out.status == "dry_run" and not actor.stop_requested


@pytest.mark.parametrize(
    "action",
    [
        {"type": "scale_lr", "factor": 0},
        {"type": "scale_lr", "factor": float("nan")},
        {"type": "scale_lr", "factor": "0.1"},
        {"type": "scale_lr", "factor": 310.0},
        {"type": "clip_grad_norm", "max_norm": -1.0},
        {"type": "add_warmup", "steps": 100},
        {"type": "teleport"},
        "not an action",
    ],
)
def test_bad_or_unsupported_advice_is_skipped_and_changes_nothing(action) -> None:
    opt = _opt(1.0, groups=1)
    out = Actor(opt, cooldown_steps=0).apply(3, action, {"kind": "nan"})
    assert out.status == "refused" and _lrs(opt) == [1.0]


class _Recorder:
    def __init__(self) -> None:
        self.reports: list[tuple] = []

    def report_action(self, step, action, applied, dry_run) -> None:
        self.reports.append((step, action["type"], applied, dry_run))


def test_applied_and_dry_run_actions_are_reported_to_the_monitor() -> None:
    rec = _Recorder()
    Actor(_opt(1.0, groups=1), monitor=rec).apply(4, {"type": "scale_lr", "factor": 0.1}, {"kind": "nan"})
    Actor(_opt(1.0, groups=1), monitor=rec, dry_run=True).apply(5, {"type": "stop"}, {"kind": "nan"})
    Actor(_opt(1.0, groups=1), monitor=rec).apply(6, {"type": "skip_batch"}, {"kind": "nan"})  # not done: not reported
    assert rec.reports == [(4, "scale_lr", True, False), (5, "stop", False, True)]


def test_an_episode_that_outlives_the_remedy_is_acted_on_again_after_the_cooldown() -> None:
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, cooldown_steps=20)
    a = {"type": "scale_lr", "factor": 0.5}
    assert actor.apply(10, a, {"id": "d", "step": 5, "last_step": 10}).status == "applied"
    # still updated, but the cooldown since the action has not passed
    assert actor.apply(25, a, {"id": "d", "step": 5, "last_step": 25}).status == "refused"
    # open but no longer updated since step 12: the remedy may be working, leave it
    assert actor.apply(40, a, {"id": "d", "step": 5, "last_step": 12}).status == "refused"
    # updated a whole cooldown after the action: act again
    assert actor.apply(40, a, {"id": "d", "step": 5, "last_step": 35}).status == "applied"
    # resolved episodes are never acted on again
    out = actor.apply(90, a, {"id": "d", "step": 5, "last_step": 80, "resolved_step": 85})
    assert out.status == "refused" and _lrs(opt) == [0.25]


def test_a_cut_after_a_blow_up_restarts_from_the_last_good_step_when_rollback_is_possible() -> None:
    restored: list[int] = []
    rec = _Recorder()
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, on_rollback=restored.append, monitor=rec)
    alert = {"id": "d", "kind": "divergence", "severity": "critical", "step": 30, "last_step": 34,
             "evidence": {"best_step": 12}}
    assert actor.apply(34, {"type": "scale_lr", "factor": 0.1}, alert).status == "applied"
    assert restored == [12] and _lrs(opt) == [pytest.approx(0.1)]
    # the rollback first: an on_rollback that restores the optimizer in full keeps the cut
    assert rec.reports == [(34, "rollback", True, False), (34, "scale_lr", True, False)]
    # a warning (not critical) cut, or no good step named: no rollback
    actor2 = Actor(_opt(1.0, groups=1), on_rollback=restored.append)
    actor2.apply(9, {"type": "scale_lr", "factor": 0.1}, {**alert, "severity": "warning"})
    Actor(_opt(1.0, groups=1), on_rollback=restored.append).apply(9, {"type": "scale_lr", "factor": 0.1},
                                                                {**alert, "evidence": {}})
    assert restored == [12]


def test_advice_to_undo_the_actors_own_cut_is_not_followed() -> None:
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, cooldown_steps=0)
    actor.apply(10, {"type": "scale_lr", "factor": 0.1}, {"id": "d", "kind": "divergence", "step": 5, "last_step": 10})
    out = actor.apply(20, {"type": "scale_lr", "factor": 10.0}, {"id": "l", "kind": "lr_anomaly", "step": 11, "last_step": 20})
    assert out.status == "refused" and "own cut" in out.reason and _lrs(opt) == [pytest.approx(0.1)]
    # a plateau asking for a larger LR is still followed
    out = actor.apply(30, {"type": "scale_lr", "factor": 3.0}, {"id": "p", "kind": "plateau", "step": 21, "last_step": 30})
    assert out.status == "applied" and _lrs(opt) == [pytest.approx(0.3)]


def test_the_monitor_builds_the_actor_and_applies_advice_in_the_training_thread() -> None:
    from losswatch.client import Monitor

    stopped: list[bool] = []
    opt = _opt(1.0, groups=1)
    with Monitor(run_id="act-local", url=None, act=True, optimizer=opt, on_stop=lambda: stopped.append(True)) as mon:
        mon.log(4, loss=1.0)
        # a float NaN is caught on the spot and acted on in the same log(), in this thread, before
        # the optimizer steps on it: this batch is skipped
        mon.log(5, loss=float("nan"))
        assert not stopped
        # NaN again: the skip failed; the rollback cannot be made (no on_rollback): training stops
        mon.log(6, loss=float("nan"))
        assert stopped == [True]
        # each action, then its verdict (a report that applies nothing)
        assert [(a["step"], a["action"]["type"], a["applied"], a["action"].get("verdict")) for a in mon.actions] \
            == [(5, "skip_batch", True, None), (6, "skip_batch", False, "failed"), (6, "stop", True, None),
                (6, "stop", False, "verified")]


class _Advice:
    """A monitor's face as the Actor sees it: the current advice and the alerts."""

    def __init__(self) -> None:
        self.recommendation = None
        self.alerts: list[dict] = []

    def set(self, alert: dict) -> None:
        self.alerts = [alert]
        self.recommendation = alert["action"]


def test_follow_reoffers_standing_advice_when_the_cooldown_that_held_it_back_ends() -> None:
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, cooldown_steps=20)
    mon = _Advice()
    mon.set({"id": "a", "kind": "divergence", "step": 1, "last_step": 5, "action": {"type": "scale_lr", "factor": 0.5}})
    assert actor.follow(5, mon).status == "applied"
    # a new episode during the cooldown: held back ...
    mon.set({"id": "b", "kind": "divergence", "step": 8, "last_step": 12, "action": {"type": "scale_lr", "factor": 0.5}})
    assert actor.follow(12, mon).status == "cooling_down"
    assert actor.offer_again_at(12) == 25  # the end of the cooldown
    assert all(actor.follow(s, mon) is None for s in range(13, 25))  # nothing new, still cooling down
    # ... and applied once the cooldown is over, although the alert did not change
    assert actor.follow(25, mon).status == "applied"
    assert actor.follow(26, mon) is None
    assert _lrs(opt) == [0.25]


def test_follow_leaves_an_episode_alone_once_acted_on_unless_it_keeps_growing() -> None:
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, cooldown_steps=20)
    mon = _Advice()
    alert = {"id": "a", "kind": "divergence", "step": 1, "last_step": 5, "action": {"type": "scale_lr", "factor": 0.5}}
    mon.set(alert)
    assert actor.follow(5, mon).status == "applied"
    assert all(actor.follow(s, mon) is None for s in range(6, 80))  # open, not updated: no more cuts
    mon.set({**alert, "last_step": 80})  # the detector says the condition goes on
    assert actor.follow(80, mon).status == "applied"
    assert _lrs(opt) == [0.25]


def test_an_escalated_alert_is_acted_on_again_once_the_cooldown_allows() -> None:
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, cooldown_steps=20)
    mon = _Advice()
    alert = {"id": "a", "kind": "divergence", "severity": "critical", "step": 3, "last_step": 3,
             "evidence": {"best_step": 1, "span_steps": 3}, "action": {"type": "scale_lr", "factor": 0.1}}
    mon.set(alert)
    assert actor.follow(3, mon).status == "applied"
    # the detector saw the cut taken and judged it not enough: same id, escalation 1
    escalated = {**alert, "last_step": 15, "evidence": {**alert["evidence"], "escalation": 1}}
    mon.set(escalated)
    assert actor.follow(15, mon).status == "cooling_down"  # within the cooldown: held back ...
    assert all(actor.follow(s, mon) is None for s in range(16, 23))
    assert actor.follow(23, mon).status == "applied"  # ... and applied when it ends
    assert _lrs(opt) == [pytest.approx(0.01)]
    # the same escalation level is not acted on twice
    outcomes = [actor.follow(s, mon) for s in range(24, 90)]
    assert not [o for o in outcomes if o is not None and o.status == "applied"]
    assert _lrs(opt) == [pytest.approx(0.01)]


def test_a_rollback_drops_the_gradients_computed_on_the_discarded_weights() -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    actor = Actor(opt, on_rollback=lambda step: model.load_state_dict(saved))
    with torch.no_grad():
        model.weight.add_(100.0)  # the blow-up
    model(torch.ones(4, 2)).pow(2).sum().backward()  # the step in flight: huge gradients
    alert = {"id": "d", "kind": "divergence", "severity": "critical", "step": 9, "last_step": 12,
             "evidence": {"best_step": 2}}
    assert actor.apply(12, {"type": "scale_lr", "factor": 0.1}, alert).status == "applied"
    opt.step()  # the training loop goes on with its step: it must not move the restored weights
    assert torch.equal(model.weight, saved["weight"]) and torch.equal(model.bias, saved["bias"])


def test_a_cut_whose_alert_names_a_restart_step_restarts_there_at_any_severity() -> None:
    restored: list[int] = []
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, on_rollback=restored.append)
    alert = {"id": "s", "kind": "grad_vanishing", "severity": "warning", "step": 80, "last_step": 80,
             "evidence": {"restart_step": 0, "consecutive": 10}}
    assert actor.apply(80, {"type": "scale_lr", "factor": 0.3}, alert).status == "applied"
    assert restored == [0] and _lrs(opt) == [pytest.approx(0.3)]
    assert [h.action["type"] for h in actor.history if h.status == "applied"] == ["rollback", "scale_lr"]
    # a raise never restarts; a restart step at or after the current step is ignored
    Actor(_opt(1.0, groups=1), on_rollback=restored.append).apply(
        90, {"type": "scale_lr", "factor": 3.0}, {**alert, "id": "t"})
    Actor(_opt(1.0, groups=1), on_rollback=restored.append).apply(
        90, {"type": "scale_lr", "factor": 0.3}, {**alert, "id": "u", "evidence": {"restart_step": 90}})
    assert restored == [0]


# ---------------------------------------------------------------- bad input: one warning, the run goes on


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("losswatch") and r.levelname == "WARNING"]


def test_an_on_rollback_that_raises_is_one_warning_and_nothing_else_is_done(caplog) -> None:
    def broken(step):
        raise OSError(f"checkpoint for step {step} is unreadable")

    opt = _opt(1.0, groups=1)
    actor = Actor(opt, on_rollback=broken)
    # seen a step after it was raised: the batch is gone, the NaN ladder starts at the rollback
    alert = {"id": "n", "kind": "nan", "severity": "critical", "step": 8}
    with caplog.at_level("WARNING", logger="losswatch"):
        out = actor.apply(9, {"type": "rollback", "to_step": 3}, alert)
        again = actor.apply(10, {"type": "rollback", "to_step": 3}, dict(alert, last_step=10))
    assert out.status is Status.FAILED and "on_rollback" in out.reason and "unreadable" in out.reason
    assert again.status is Status.REFUSED  # not retried step after step
    assert not actor.stop_requested and _lrs(opt) == [1.0]  # no stop in its place, no LR change
    assert actor.actions == [] and len(_warnings(caplog)) == 1


def test_an_on_stop_that_raises_leaves_the_run_going(caplog) -> None:
    def broken():
        raise RuntimeError("trainer already gone")

    actor = Actor(_opt(1.0, groups=1), on_stop=broken)
    with caplog.at_level("WARNING", logger="losswatch"):
        out = actor.apply(5, {"type": "stop", "reason": "x"}, {"id": "s", "kind": "nan", "severity": "critical"})
    assert out.status is Status.FAILED and "on_stop" in out.reason
    assert not actor.stop_requested  # a TorchWatcher with raise_on_stop does not raise behind the user's back
    assert len(_warnings(caplog)) == 1


def test_an_optimizer_without_param_groups_is_one_warning_and_only_its_lr_is_left_alone(caplog) -> None:
    class NotTorch:
        lr = 1.0

        def step(self):
            pass

    restored = []
    with caplog.at_level("WARNING", logger="losswatch"):
        actor = Actor(NotTorch(), on_rollback=restored.append, cooldown_steps=0)
        cut = actor.apply(5, {"type": "scale_lr", "factor": 0.1}, {"id": "d", "kind": "divergence", "step": 1, "last_step": 5})
        clip = actor.apply(6, {"type": "clip_grad_norm", "max_norm": 1.0}, {"id": "g", "kind": "grad_explosion", "step": 1, "last_step": 6})
        back = actor.apply(7, {"type": "rollback", "to_step": 2}, {"id": "n", "kind": "nan", "severity": "critical"})
    assert cut.status is Status.REFUSED and "param_groups" in cut.reason
    assert clip.status is Status.REFUSED and "param_groups" in clip.reason
    assert back.status is Status.APPLIED and restored == [2]  # what does not need the optimizer still works
    assert actor.optimizer.lr == 1.0
    assert len(_warnings(caplog)) == 2 and "param_groups" in _warnings(caplog)[0]  # the warning, then the rollback


def test_a_scheduler_of_an_unknown_class_is_one_warning_and_the_lr_is_not_cut_behind_its_back(caplog) -> None:
    class WarmupThenFlat:
        """Sets the LR itself from its own peak at every step: scaling param_groups would be undone."""

        def __init__(self, opt, peak):
            self.opt, self.peak, self.t = opt, peak, 0

        def step(self):
            self.t += 1
            for g in self.opt.param_groups:
                g["lr"] = self.peak * min(1.0, self.t / 10)

    opt = _opt(1.0, groups=1)
    sched = WarmupThenFlat(opt, 1.0)
    with caplog.at_level("WARNING", logger="losswatch"):
        actor = Actor(opt, sched, cooldown_steps=0)
        out = actor.apply(5, {"type": "scale_lr", "factor": 0.1}, {"id": "d", "kind": "divergence", "step": 1, "last_step": 5})
    assert out.status is Status.REFUSED and "WarmupThenFlat" in out.reason
    assert _lrs(opt) == [1.0] and actor.lr_scale == 1.0
    assert len(_warnings(caplog)) == 1 and "WarmupThenFlat" in _warnings(caplog)[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="losswatch"):
        Actor(opt, torch.optim.lr_scheduler.StepLR(opt, 10))  # a torch scheduler: known, no warning
    assert _warnings(caplog) == []


def test_a_monitor_whose_on_rollback_raises_keeps_logging_and_reports_nothing_applied(monkeypatch, caplog) -> None:
    from losswatch.client import Monitor

    monkeypatch.delenv("LOSSWATCH_URL", raising=False)

    def broken(step):
        raise FileNotFoundError(f"no checkpoint at or before step {step}")

    opt = _opt(1.0, groups=1)
    with caplog.at_level("WARNING", logger="losswatch"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Monitor(run_id="act-broken-rollback", act=True, optimizer=opt, on_rollback=broken,
                     flush_interval=3600, batch_size=10**6) as mon:
            for step in range(10):
                mon.log(step, loss=1.0, grad_norm=1.0)
            mon.log(10, loss=float("nan"), grad_norm=1.0)  # caught in log(): this batch is skipped
            mon.log(11, loss=float("nan"), grad_norm=1.0)  # the skip failed: the ladder rolls back
            for step in range(12, 20):
                mon.log(step, loss=1.0, grad_norm=1.0)  # the run goes on
            tried = [(o.step, o.action["type"], o.status) for o in mon.actor.history
                     if o.status in (Status.FAILED, Status.APPLIED) and o.verdict is None]
            # the rollback tried once (the detectors' copy of the alert is refused)
            assert tried == [(10, "skip_batch", Status.APPLIED), (11, "rollback", Status.FAILED)]
            assert [(a["action"]["type"], a["applied"], a["action"].get("verdict")) for a in mon.actions] \
                == [("skip_batch", True, None), ("skip_batch", False, "failed")]
            assert not mon.actor.stop_requested and _lrs(opt) == [1.0]
            assert mon.flush(10)
    assert [a["step"] for a in mon.alerts if a["kind"] == "nan"] == [10]
    assert not [w for w in caught if "Monitor.log failed" in str(w.message)]  # every step was logged
    assert sum("on_rollback" in m for m in _warnings(caplog)) == 1


def test_the_monitor_spells_actor_options_like_the_integrations_and_the_old_spelling_still_works(monkeypatch) -> None:
    from losswatch.client import Monitor

    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    opt = _opt(1.0, groups=1)
    with Monitor(run_id="act-options", act=True, optimizer=opt, actor_options={"cooldown_steps": 7, "max_actions": 2}) as mon:
        assert (mon.actor.cooldown_steps, mon.actor.max_actions) == (7, 2)
    with pytest.warns(DeprecationWarning, match="actor_options"):
        old = Monitor(run_id="act-options-old", act=True, optimizer=opt, act_cooldown_steps=9, act_max=3)
    with old:
        assert (old.actor.cooldown_steps, old.actor.max_actions) == (9, 3)


def test_a_framework_session_given_an_acting_monitor_shares_its_actor_with_one_warning(monkeypatch) -> None:
    from losswatch.client import Monitor
    from losswatch.client.integrations._common import Session

    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    opt = _opt(1.0, groups=1)
    stops = []
    with Monitor(run_id="act-session", act=True, optimizer=opt) as mon:
        with pytest.warns(RuntimeWarning, match="asked for twice") as caught:
            a = Session(mon, act=True).make_actor(opt, on_stop=lambda: stops.append(1))
            b = Session(mon, act=True).make_actor(opt)
        assert a is b is mon.actor and len(caught) == 1  # said once per run
        assert a.on_stop is not None  # a part the Monitor's Actor lacked, taken from the session
    plain = Session(None, act=True, run_id="act-session-own")  # opens its own Monitor: acting turned on there
    plain.open()
    try:
        assert plain.make_actor(opt) is plain.monitor.actor
    finally:
        plain.close()


# ---------------------------------------------------------------- act, verify, escalate (a real model)


class _Regression:
    """Full-batch least squares on a tiny linear model: stable below LR ~0.6, diverging above."""

    def __init__(self, lr: float) -> None:
        torch.manual_seed(0)
        self.x = torch.randn(256, 4)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.5 * torch.randn(256)
        self.model = torch.nn.Linear(4, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.step = 0

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def state(self) -> dict:
        import copy

        return {"model": copy.deepcopy(self.model.state_dict()), "optimizer": copy.deepcopy(self.opt.state_dict())}

    def train(self, n: int, actor: Actor, advice: "_Advice | None" = None) -> list[float]:
        """n steps; the Actor sees each record (observe) and follows the advice, between
        backward() and optimizer.step(), as an integration does."""
        losses = []
        for _ in range(n):
            loss = ((self.model(self.x).squeeze(1) - self.y) ** 2).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = float(torch.cat([p.grad.reshape(-1) for p in self.model.parameters()]).norm())
            actor.observe([{"step": self.step, "loss": float(loss.detach()), "grad_norm": gn,
                            "lr": self.opt.param_groups[0]["lr"]}])
            actor.follow(self.step, advice) if advice is not None else actor.verify(self.step)
            if actor.stop_requested:
                break
            self.opt.step()
            losses.append(float(loss.detach()))
            self.step += 1
        return losses


def _divergence(first: int, last: int, factor: float = 0.1) -> dict:
    return {"id": f"r:divergence:{first}", "incident": f"r:divergence:{first}", "kind": "divergence",
            "severity": "warning", "event": "raised", "step": first, "last_step": last,
            "evidence": {"span_steps": last - first + 1}, "action": {"type": "scale_lr", "factor": factor}}


def test_an_lr_cut_that_brings_the_loss_back_is_reported_verified() -> None:
    run = _Regression(0.05)
    rec = _Recorder()
    actor = Actor(run.opt, monitor=rec, verify_records=20, verify_steps=20)
    advice = _Advice()
    run.train(15, actor, advice)  # converging, not converged
    run.set_lr(1.5)  # an LR bug: the loss runs away
    run.train(4, actor, advice)
    advice.set(_divergence(15, 18))
    run.train(40, actor, advice)
    assert run.opt.param_groups[0]["lr"] == pytest.approx(0.15)
    (verdict,) = actor.verdicts
    assert verdict.verdict is Verdict.VERIFIED and verdict.evidence["applied_step"] == 19
    ev = verdict.evidence
    assert ev["incident"] == "r:divergence:15" and ev["alert"] == "r:divergence:15" and ev["event"] == "raised"
    assert ev["loss_before"] > 0 and ev["grad_norm_before"] > 0  # the levels before the incident began
    assert "back under" in verdict.reason
    # the action, then its verdict, reported (the verdict applies nothing)
    assert rec.reports == [(19, "scale_lr", True, False), (39, "scale_lr", False, False)]


@pytest.mark.parametrize("restore_optimizer", [True, False])
def test_a_cut_that_fails_escalates_to_a_rollback_before_the_incident_then_stops(caplog, restore_optimizer) -> None:
    run = _Regression(0.05)
    got: list[tuple[int, Any]] = []

    def on_rollback(step: int, checkpoint: Any) -> None:  # the two-argument form gets the checkpoint
        got.append((step, checkpoint["tag"]))
        run.model.load_state_dict(checkpoint["model"])
        if restore_optimizer:  # the checkpoint's own LR (0.05) comes back, then the ladder's cut
            run.opt.load_state_dict(checkpoint["optimizer"])

    actor = Actor(run.opt, on_rollback=on_rollback, verify_records=10, verify_steps=10, cooldown_steps=0)
    advice = _Advice()
    for _ in range(3):  # checkpoints at steps 0, 7, 14: each the state step s runs from
        actor.checkpoints.add(run.step, dict(run.state(), tag=run.step))
        run.train(7, actor, advice)
    run.set_lr(3000.0)  # far too high: even x0.01 of it diverges
    run.train(2, actor, advice)
    actor.checkpoints.add(run.step, dict(run.state(), tag=run.step))  # saved inside the run-away: not a target
    run.train(2, actor, advice)
    with caplog.at_level("WARNING", logger="losswatch"):
        advice.set(_divergence(22, 24))
        run.train(60, actor, advice)
    assert got == [(14, 14)]  # the latest checkpoint before the incident began (step 22), not 23
    rungs = [(o.action["type"], o.evidence.get("rung")) for o in actor.actions]
    assert rungs[:3] == [("scale_lr", "advice"), ("rollback", "rollback_and_cut"), ("scale_lr", "rollback_and_cut")]
    assert any("is failed" in m for m in _warnings(caplog))  # each verdict said on the losswatch logger
    if restore_optimizer:  # back at step 14's state and LR, cut: the run recovers
        assert [v.verdict.value for v in actor.verdicts] == ["failed", "verified"]
        assert not actor.stop_requested and run.opt.param_groups[0]["lr"] == pytest.approx(0.005)
    else:  # the weights restored, the LR only cut twice (30): it runs away again, and the run stops
        assert rungs[3:] == [("stop", "stop")]
        assert [v.verdict.value for v in actor.verdicts] == ["failed", "failed", "verified"]
        assert actor.stop_requested and run.opt.param_groups[0]["lr"] == pytest.approx(30.0)


def test_cuts_stop_at_a_thousandth_of_the_peak_lr_and_attempts_per_incident_are_capped() -> None:
    opt = _opt(1.0, groups=1)
    actor = Actor(opt, cooldown_steps=0, max_actions=10)
    for i in range(3):  # three incidents, one cut each: 1 -> 0.001, the floor
        out = actor.apply(10 * i + 5, {"type": "scale_lr", "factor": 0.1}, _divergence(10 * i, 10 * i + 5))
        assert out.status is Status.APPLIED
    out = actor.apply(45, {"type": "scale_lr", "factor": 0.1}, _divergence(40, 45))
    assert out.status is Status.REFUSED and "floor" in out.reason and _lrs(opt) == [pytest.approx(0.001)]
    # a cut that would cross the floor is clamped to it
    opt2 = _opt(1.0, groups=1)
    actor2 = Actor(opt2, cooldown_steps=0)
    actor2.apply(5, {"type": "scale_lr", "factor": 0.01}, _divergence(0, 5))
    out = actor2.apply(15, {"type": "scale_lr", "factor": 0.05}, _divergence(10, 15))
    assert out.status is Status.APPLIED and _lrs(opt2) == [pytest.approx(0.001)]
    # one incident escalated again and again: at most max_attempts_per_incident attempts
    opt3 = _opt(1.0, groups=1)
    actor3 = Actor(opt3, cooldown_steps=0, max_attempts_per_incident=2)
    alert = _divergence(0, 5)
    statuses = []
    for level in range(3):
        a = dict(alert, last_step=5 + level, evidence=dict(alert["evidence"], escalation=level))
        statuses.append(actor3.apply(5 + level, a["action"], a).status)
    assert statuses == [Status.APPLIED, Status.APPLIED, Status.CAPPED] and _lrs(opt3) == [pytest.approx(0.01)]


def test_advice_the_data_has_since_contradicted_is_not_acted_on() -> None:
    run = _Regression(0.05)
    actor = Actor(run.opt, verify_records=10, verify_steps=10)
    run.train(15, actor)
    run.set_lr(1.5)
    run.train(2, actor)  # a short run-away ...
    run.set_lr(0.05)
    run.train(30, actor)  # ... that came back under its level before the incident by itself
    out = actor.apply(run.step, {"type": "scale_lr", "factor": 0.1}, _divergence(15, 17))
    assert out.status is Status.REFUSED and "contradicts" in out.reason and _lrs(run.opt) == [0.05]
    resolved = dict(_divergence(15, 17), id="r:d2", incident="r:d2", resolved_step=20)
    out = actor.apply(run.step, {"type": "scale_lr", "factor": 0.1}, resolved)
    assert out.status is Status.REFUSED and "resolved" in out.reason and _lrs(run.opt) == [0.05]


def test_a_deleted_checkpoint_is_one_warning_and_the_previous_one_is_used(tmp_path, caplog) -> None:
    paths = [tmp_path / f"ck-{s}.pt" for s in (0, 10, 20)]
    for p in paths:
        p.write_text("state")
    got: list[tuple[int, Any]] = []
    actor = Actor(_opt(1.0, groups=1), on_rollback=lambda step, ck: got.append((step, ck)), cooldown_steps=0)
    for s, p in zip((0, 10, 20), paths):
        actor.checkpoints.add(s, str(p))
    paths[1].unlink()
    nan = {"id": "r:nan:15", "incident": "r:nan:15", "kind": "nan", "severity": "critical", "step": 15,
           "last_step": 16}
    with caplog.at_level("WARNING", logger="losswatch"):
        out = actor.apply(16, {"type": "rollback", "to_step": 14}, nan)
    assert out.status is Status.APPLIED and got == [(0, str(paths[0]))]
    assert sum("no longer exists" in m for m in _warnings(caplog)) == 1
    # none left: said, and the ladder goes on to its next rung (stop), never silently
    paths[0].unlink()
    paths[2].unlink()
    caplog.clear()
    nan2 = dict(nan, id="r:nan:40", incident="r:nan:40", step=40, last_step=41)
    with caplog.at_level("WARNING", logger="losswatch"):
        actor2 = Actor(_opt(1.0, groups=1), on_rollback=lambda step, ck: got.append((step, ck)),
                       checkpoints=actor.checkpoints)
        out = actor2.apply(41, {"type": "rollback", "to_step": 39}, nan2)
    assert got == [(0, str(paths[0]))] and actor2.stop_requested and out.action["type"] == "stop"
    assert any("no checkpoint" in m for m in _warnings(caplog))


def test_a_one_argument_on_rollback_gets_the_checkpoint_step() -> None:
    got: list[int] = []
    actor = Actor(_opt(1.0, groups=1), on_rollback=got.append)
    actor.checkpoints.add(0, {"tag": "a"})  # not a path: passed as it is, never checked
    actor.checkpoints.add(8, {"tag": "b"})
    actor.apply(12, {"type": "rollback", "to_step": 11},
                {"id": "r:nan:11", "kind": "nan", "severity": "critical", "step": 11, "last_step": 12})
    assert got == [8]


def _docs_blocks(heading: str) -> list[str]:
    """The python blocks of docs/acting.md under ``heading`` (up to the next heading)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "acting.md").read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]


def test_the_documented_plain_loop_on_rollback_restores_model_optimizer_scheduler_and_data(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    setup, loop = _docs_blocks("### A full on_rollback for a plain loop")
    ns: dict[str, Any] = {"CKPT_DIR": str(tmp_path), "__name__": "docs_example"}
    exec(compile(setup, "docs/acting.md", "exec"), ns)
    ns["TOTAL_STEPS"] = 120
    exec(compile(loop, "docs/acting.md", "exec"), ns)  # a healthy run: checkpoints at 0, 50, 100
    assert ns["step"] == 120 and [c.step for c in ns["mon"].checkpoints] == [0, 50, 100]
    model, opt, sched, gen = ns["model"], ns["opt"], ns["sched"], ns["gen"]
    # a NaN raised at step 80: the ladder rolls back to the checkpoint before it (step 50)
    nan = {"id": "plain-loop:nan:80", "incident": "plain-loop:nan:80", "kind": "nan", "severity": "critical",
           "step": 80, "last_step": 81}
    out = ns["mon"].actor.apply(81, {"type": "rollback", "to_step": 79}, nan)
    assert out.status is Status.APPLIED and ns["step"] == 50 and ns["rolled_back"]
    saved = torch.load(tmp_path / "step-50.pt", weights_only=True)
    assert all(torch.equal(p, saved["model"][k]) for k, p in model.state_dict().items())
    assert opt.state_dict()["state"][0]["step"] == saved["optimizer"]["state"][0]["step"] == 50
    assert sched.last_epoch == 50 and torch.equal(gen.get_state(), saved["data"])
    assert ns["mon"].meta["rewinds"] == [{"to_step": 50, "at_step": 81}]
    # the loop goes on from step 50 to the end
    ns["mon"] = type(ns["mon"])(run_id="plain-loop-2", act=True, optimizer=opt, scheduler=sched,
                                on_rollback=ns["on_rollback"])
    exec(compile(loop, "docs/acting.md", "exec"), ns)
    assert ns["step"] == 120 and not ns["rolled_back"]


def test_the_local_detectors_return_to_their_state_at_the_checkpoint_after_a_rewind(monkeypatch) -> None:
    from losswatch.client import Monitor

    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    with Monitor(run_id="rewind-local", flush_interval=3600) as mon:
        mon.checkpoint(0, {"tag": 0})
        for s in range(60):
            mon.log(s, loss=2.0 * 0.98 ** s, grad_norm=1.0, lr=0.1)
        mon.checkpoint(60, {"tag": 60})
        for s in range(60, 100):  # a blow-up the detectors see
            mon.log(s, loss=2.0 * 1.15 ** (s - 60), grad_norm=50.0, lr=0.1)
        assert mon.flush(10)
        raised = {a["id"] for a in mon.alerts if a.get("resolved_step") is None}
        assert raised  # the run-away raised something
        mon.mark_rewind(60, 100)  # what the Actor does after restoring the checkpoint of step 60
        for s in range(60, 70):  # the loop logs steps 60.. again, healthy this time
            mon.log(s, loss=2.0 * 0.98 ** s, grad_norm=1.0, lr=0.1)
        assert mon.flush(10)
        still = {a["id"] for a in mon.alerts if a.get("resolved_step") is None}
        assert not (raised & still)  # the run-away's alerts are undone with the records that raised them
        assert mon.meta["rewinds"] == [{"to_step": 60, "at_step": 100}]


def test_the_hugging_face_callback_records_the_trainers_checkpoints(tmp_path, monkeypatch) -> None:
    transformers = pytest.importorskip("transformers")
    from losswatch.client import Monitor
    from losswatch.client.integrations.huggingface import LosswatchCallback

    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=32, n_positions=16)
    seqs = (torch.randint(0, 32, (64, 1)) + torch.arange(8)) % 32
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=6, logging_steps=1,
        per_device_train_batch_size=8, save_strategy="steps", save_steps=3, disable_tqdm=True)
    with Monitor(run_id="hf-checkpoints", flush_interval=3600) as mon:
        trainer = transformers.Trainer(model=transformers.GPT2LMHeadModel(cfg), args=args,
                                       train_dataset=[{"input_ids": s, "labels": s} for s in seqs],
                                       callbacks=[LosswatchCallback(mon)])
        trainer.train()
        recorded = [(c.step, c.token) for c in mon.checkpoints]
    # checkpoint-N holds the state after N steps: the step logged as N + 1 runs from it
    assert recorded == [(4, str(tmp_path / "checkpoint-3")), (7, str(tmp_path / "checkpoint-6"))]
    assert all((tmp_path / f"checkpoint-{n}").is_dir() for n in (3, 6))
    assert mon.meta["checkpoints"] == [{"step": 4, "path": str(tmp_path / "checkpoint-3")},
                                       {"step": 7, "path": str(tmp_path / "checkpoint-6")}]


def test_the_lightning_callback_records_model_checkpoint_files(tmp_path, monkeypatch) -> None:
    L = pytest.importorskip("lightning.pytorch")
    from losswatch.client import Monitor
    from losswatch.client.integrations.lightning import LosswatchCallback

    monkeypatch.delenv("LOSSWATCH_URL", raising=False)

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randn(64, 4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    saver = L.callbacks.ModelCheckpoint(dirpath=str(tmp_path), every_n_train_steps=4, save_top_k=-1)
    with Monitor(run_id="pl-checkpoints", flush_interval=3600) as mon:
        trainer = L.Trainer(max_steps=12, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[LosswatchCallback(mon), saver], accelerator="cpu", devices=1)
        trainer.fit(Tiny(), loader)
        recorded = [(c.step, c.token) for c in mon.checkpoints]
    # written after 4 and 8 steps (seen before the next optimizer step); the one after the last
    # step comes when no step follows, and is not a rollback target
    assert [s for s, _ in recorded] == [4, 8]
    assert all(p.endswith(".ckpt") and (tmp_path / p.split("/")[-1]).exists() for _, p in recorded)


def test_a_raise_that_does_not_help_stops_further_raises() -> None:
    opt = _opt(0.01, groups=1)
    actor = Actor(opt, cooldown_steps=0, verify_records=5, verify_steps=5)
    raise_lr = {"id": "p", "incident": "p", "kind": "plateau", "severity": "warning", "step": 10, "last_step": 20,
                "action": {"type": "scale_lr", "factor": 3.0}}
    actor.observe([{"step": s, "loss": 1.0 - 0.001 * s, "lr": 0.01} for s in range(21)])
    assert actor.apply(20, raise_lr["action"], raise_lr).status is Status.APPLIED
    actor.observe([{"step": s, "loss": 1.5, "lr": 0.03} for s in range(21, 30)])  # worse after the raise
    out = actor.verify(29)
    assert [v.verdict for v in actor.verdicts] == [Verdict.FAILED]
    assert out.status is Status.APPLIED and out.evidence["rung"] == "stop_raising"
    again = dict(raise_lr, id="p2", incident="p2", step=40, last_step=50)
    out = actor.apply(50, again["action"], again)
    assert out.status is not Status.APPLIED and _lrs(opt) == [pytest.approx(0.03)]  # never raised again


def test_the_monitor_feeds_the_actor_and_a_skipped_nan_batch_is_verified_through_it(monkeypatch) -> None:
    from losswatch.client import Monitor

    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Monitor(run_id="verify-local", act=True, optimizer=opt, flush_interval=3600,
                 actor_options={"verify_records": 5, "verify_steps": 5}) as mon:
        for s in range(10):
            mon.log(s, loss=1.0, grad_norm=1.0, lr=0.1)
        assert mon.flush(10)  # the background thread feeds the Actor's levels
        model(torch.ones(1, 2)).sum().backward()
        mon.log(10, loss=float("nan"), grad_norm=1.0, lr=0.1)  # acted on in this call: the batch skipped
        assert [o.action["type"] for o in mon.actor.actions] == ["skip_batch"]
        assert all(p.grad is None for p in model.parameters())  # the optimizer will skip this step
        for s in range(11, 18):
            mon.log(s, loss=0.9, grad_norm=1.0, lr=0.1)
            assert mon.flush(10)
        (verdict,) = mon.actor.verdicts
        assert verdict.verdict is Verdict.VERIFIED and verdict.evidence["incident"] == "verify-local:nan:10"
        assert [(a["action"]["type"], a["applied"], a["action"].get("verdict")) for a in mon.actions] == [
            ("skip_batch", True, None), ("skip_batch", False, "verified")]


def test_sgd_steps_far_too_small_are_raised_twice_early_and_both_raises_verified(monkeypatch) -> None:
    # a real SGD run (momentum 0.9) on ill-conditioned least squares at LR/100 of its tuned 0.1,
    # through the Monitor's local engine: the early check asks x10 after 128 records, and again on
    # the 64 records right after that raise, still far too small; then the tuned LR is reached
    # and nothing more is asked. Both raises are verified (the loss kept falling).
    import numpy as np

    from losswatch.client import Monitor
    from losswatch.client.integrations._common import optimizer_meta

    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 20)) * np.logspace(0, -1.5, 20)
    y = x @ rng.normal(size=20) + 0.3 * rng.normal(size=4096)
    xs, ys = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    w = torch.nn.Parameter(torch.zeros(20))
    opt = torch.optim.SGD([w], lr=0.001, momentum=0.9)
    order = torch.Generator().manual_seed(0)
    with Monitor(run_id="lr-too-low", act=True, optimizer=opt, meta=optimizer_meta(opt), flush_interval=3600) as mon:
        for s in range(450):
            i = torch.randint(0, len(xs), (32,), generator=order)
            loss = 0.5 * ((xs[i] @ w - ys[i]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            mon.log(s, loss=float(loss.detach()), grad_norm=float(w.grad.norm()), lr=opt.param_groups[0]["lr"])
            assert mon.flush(10)  # the local engine has judged this record before the next step
            opt.step()
        raises = [(o.step, o.action["type"], o.action["factor"]) for o in mon.actor.actions]
        assert raises == [(129, "scale_lr", 10.0), (193, "scale_lr", 10.0)]
        assert _lrs(opt) == [pytest.approx(0.1)]
        assert [(v.evidence["applied_step"], v.verdict) for v in mon.actor.verdicts] == [
            (129, Verdict.VERIFIED), (193, Verdict.VERIFIED)]
