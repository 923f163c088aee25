"""Plain PyTorch + TorchWatcher against a real service: the service must hold every step with
the loss, grad-norm and LR the loop measured itself (by concatenating its gradients), a far too
high LR must raise an alert, acting must cut it (reported to the service and its metrics), and a
NaN loss must stop a loop that opted into StopTraining at its next step.

The training tests run on every device present: the CPU here and in CI, the CPU and CUDA on a GPU
machine (docs/gpu.md). A CUDA-only test checks that watched steps never wait for the GPU."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import uuid

import pytest

torch = pytest.importorskip("torch")

from losswatch.client import Monitor  # noqa: E402
from losswatch.client.integrations.torch import StopTraining, TorchWatcher, global_grad_norm  # noqa: E402
from service_helpers import get_json as get  # noqa: E402
from service_helpers import get_text, hot_run_checks

torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_global_grad_norm_equals_the_norm_of_all_gradients_concatenated() -> None:
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7)),
          torch.nn.Parameter(torch.randn(2, 2, dtype=torch.float64)), torch.nn.Parameter(torch.randn(4))]
    for p in ps[:3]:  # mixed dtypes are grouped, not mixed up
        p.grad = torch.randn_like(p)
    gn = global_grad_norm(ps)  # ps[3] has no gradient: ignored
    ref = torch.cat([p.grad.double().flatten() for p in ps[:3]]).norm()
    assert isinstance(gn, torch.Tensor) and gn.dim() == 0
    assert float(gn) == pytest.approx(float(ref), rel=1e-6)
    assert global_grad_norm([torch.nn.Parameter(torch.zeros(2))]) is None
    inf = torch.nn.Parameter(torch.zeros(2))
    inf.grad = torch.tensor([float("inf"), 1.0])
    assert float(global_grad_norm(ps[:2] + [inf])) == float("inf")


def _data(device: str = "cpu"):
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1) + 0.05 * torch.randn(256, 1)
    return x.to(device), y.to(device)


def train(monitor, lr: float, steps: int, nan_at: int | None = None, flush_every: int | None = None,
          device: str = "cpu", **watch_kw):
    x, y = _data(device)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    watch = TorchWatcher(monitor, model, opt, scheduler=sched, **watch_kw)
    seen = []
    for step in range(steps):
        xb, yb = x[(step * 32) % 256:][:32], y[(step * 32) % 256:][:32]
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        if step == nan_at:
            loss = loss * float("nan")
        opt.zero_grad()
        loss.backward()
        flat = torch.cat([p.grad.flatten() for p in model.parameters()])
        seen.append({"step": step, "loss": float(loss.detach()), "grad_norm": float(flat.norm()), "lr": opt.param_groups[0]["lr"]})
        watch.step(step, loss)
        if flush_every and step % flush_every == 0:
            # a real step takes long enough for the advice to come back; this tiny one does
            # not, so wait for the round trip now and then (the test then does not race it)
            monitor.flush(5.0)
        if step == nan_at:
            # a NaN tensor is read off the hot path (no sync per step): let the background
            # thread read this batch now, so the next step sees the advice deterministically
            monitor.flush(5.0)
        opt.step()
        sched.step()
        if watch.should_stop:
            break
    return seen, watch, opt


@pytest.mark.parametrize("device", DEVICES)
def test_every_step_arrives_with_the_loops_own_loss_grad_norm_and_lr(service_proc, device) -> None:
    run_id = f"torch-{device}-{uuid.uuid4().hex[:8]}"
    with Monitor(run_id=run_id, url=service_proc, project="torch-test", flush_interval=0.1) as mon:
        seen, _, _ = train(mon, lr=0.05, steps=25, device=device)
    series = get(service_proc, f"/v1/runs/{run_id}/steps?project=torch-test")["series"]
    assert series["step"] == [s["step"] for s in seen]
    assert series["loss"] == pytest.approx([s["loss"] for s in seen], rel=1e-6)
    assert series["grad_norm"] == pytest.approx([s["grad_norm"] for s in seen], rel=1e-5)
    assert series["lr"] == pytest.approx([s["lr"] for s in seen], rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_far_too_high_lr_raises_an_alert_and_acting_cuts_it_visibly(service_proc, device) -> None:
    run_id = f"torch-hot-{device}-{uuid.uuid4().hex[:8]}"
    with Monitor(run_id=run_id, url=service_proc, project="torch-test", flush_interval=0.05) as mon:
        seen, watch, opt = train(mon, lr=4.0, steps=80, act=True, flush_every=5, device=device,
                                 actor_options={"cooldown_steps": 10})
    alerts, applied = hot_run_checks(service_proc, run_id, watch.actor, "torch-test")
    assert all(r["applied"] and not r["dry_run"] for r in alerts["actions"] if "verdict" not in r["action"])
    metrics = get_text(service_proc, "/metrics")
    for t in {a["action"]["type"] for a in applied}:
        assert f'losswatch_actions_applied_total{{type="{t}"}}' in metrics
    scaled = [a for a in applied if a["action"]["type"] == "scale_lr"]
    if scaled:
        k = scaled[0]["step"]
        lr_k = next(s["lr"] for s in seen if s["step"] == k)
        later = [s["lr"] for s in seen if s["step"] == k + 1]
        if later:
            assert later[0] < 0.5 * lr_k  # well below what the cosine alone gives
        assert watch.actor.lr_scale < 1 and opt.param_groups[0]["initial_lr"] == 4.0 * watch.actor.lr_scale


@pytest.mark.parametrize("device", DEVICES)
def test_a_nan_loss_stops_an_opted_in_loop_at_that_step_and_is_reported(service_proc, device) -> None:
    run_id = f"torch-nan-{device}-{uuid.uuid4().hex[:8]}"
    with Monitor(run_id=run_id, url=service_proc, project="torch-test", flush_interval=0.05) as mon:
        with pytest.raises(StopTraining):
            train(mon, lr=0.05, steps=30, nan_at=7, act=True, raise_on_stop=True, device=device)
    reports = get(service_proc, f"/v1/runs/{run_id}/alerts?project=torch-test")["actions"]
    # the stop, and its verdict (a report that applies nothing)
    assert [(r["step"], r["action"]["type"], r["applied"], r["action"].get("verdict")) for r in reports] \
        == [(8, "stop", True, None), (8, "stop", False, "verified")]


def test_dry_run_reports_but_changes_nothing(service_proc) -> None:
    run_id = f"torch-dry-{uuid.uuid4().hex[:8]}"
    with Monitor(run_id=run_id, url=service_proc, project="torch-test", flush_interval=0.05) as mon:
        seen, watch, _ = train(mon, lr=0.05, steps=12, nan_at=4, act_dry_run=True)
    assert len(seen) == 12 and not watch.should_stop  # not stopped
    reports = get(service_proc, f"/v1/runs/{run_id}/alerts?project=torch-test")["actions"]
    assert [(r["step"], r["action"]["type"], r["applied"], r["dry_run"]) for r in reports] == [(5, "stop", False, True)]


#: an alert event on the losswatch logger: severity, detector, event
EVENT_LINE = re.compile(r"losswatch: run \S+ step \S+: (\w+) (\S+) (raised|escalated): ")


def test_a_diverging_loop_is_told_on_the_losswatch_logger_with_where_to_read_it(service_proc, caplog) -> None:
    caplog.set_level(logging.INFO, logger="losswatch")
    run_id = f"torch-told-{uuid.uuid4().hex[:8]}"
    with Monitor(run_id=run_id, url=service_proc, project="torch-test", flush_interval=0.05) as mon:
        train(mon, lr=4.0, steps=60, flush_every=5)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "losswatch"]
    assert lines[0] == (logging.INFO, f"losswatch: run {run_id} -> {service_proc}/runs/{run_id}?project=torch-test "
                                      f"(API {service_proc}/v1/runs/{run_id}?project=torch-test)")
    alerts = get(service_proc, f"/v1/runs/{run_id}/alerts?project=torch-test")["alerts"]
    serious = {a["detector"] for a in alerts if a["severity"] in ("warning", "critical")}
    assert serious, alerts
    # each told at WARNING: raised, or escalated. The client's own NaN check tells the nan
    # episode first (client.nan); the service's copy of it is told again only when it asks for
    # more than the client said (a loss that blew up beside an overflowing gradient is critical
    # on both sides, so told once, by the client)
    told = {"nan" if e.group(2) == "client.nan" else e.group(2)
            for lvl, m in lines if lvl == logging.WARNING and (e := EVENT_LINE.match(m))
            and e.group(3) in ("raised", "escalated")}
    assert serious <= told, lines
    for lvl, m in lines:  # resolutions are INFO, each told once
        if m.endswith(")") and " resolved (raised at step " in m:
            assert lvl == logging.INFO and [x for _, x in lines].count(m) == 1


# a plain Monitor in a fresh interpreter: nothing configured, logging configured, or silenced
_VISIBLE = """
import logging, sys
{setup}
from losswatch.client import Monitor
with Monitor(run_id="vis") as mon:
    for step in range(12):
        mon.log(step, loss=1.0 / (step + 1) if step != 6 else float("nan"), grad_norm=1.0)
    mon.flush()
"""


@pytest.mark.parametrize("setup, prefix", [
    ("", ""),  # nothing configured: the losswatch logger prints to stderr itself
    ("logging.basicConfig(format='CFG %(levelname)s %(message)s')", "CFG "),  # printed once, the app's way
    # the app's handler takes WARNING and above only: the start line is still printed, once
    ("h = logging.StreamHandler(); h.setLevel(logging.WARNING); logging.getLogger().addHandler(h); "
     "h.setFormatter(logging.Formatter('CFG %(levelname)s %(message)s'))", "CFG "),
    ("logging.getLogger('losswatch').setLevel(logging.ERROR)", None),  # silenced
])
def test_the_start_line_and_alerts_are_visible_by_default_once_and_can_be_silenced(setup, prefix) -> None:
    out = subprocess.run([sys.executable, "-c", _VISIBLE.format(setup=setup)], capture_output=True, text=True,
                         check=True, timeout=120)
    lines = [line for line in out.stderr.splitlines() if "losswatch: run vis" in line]
    if prefix is None:
        assert lines == [], out.stderr
        return
    start = "losswatch: run vis: detecting in-process (no URL)"
    assert lines[0] in (start, f"CFG INFO {start}"), out.stderr
    nan = [line for line in lines if "client.nan raised: loss is NaN at step 6" in line]
    assert len(nan) == 1 and nan[0].startswith(prefix + ("WARNING " if prefix else "")), out.stderr
    assert len(lines) == len(set(lines)), out.stderr  # nothing printed twice


def test_a_watcher_given_no_loss_says_so_once_and_one_given_a_loss_never(caplog) -> None:
    caplog.set_level(logging.INFO, logger="losswatch")
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 3)
    with Monitor(run_id="no-loss") as mon, Monitor(run_id="with-loss") as mon2:
        without = TorchWatcher(mon, model, opt, warn_no_loss_after=(5, 0.0))
        with_loss = TorchWatcher(mon2, model, opt, warn_no_loss_after=(5, 0.0))
        for step in range(12):
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            without.step(step)  # the loop forgot the loss
            with_loss.step(step, loss)
    told = [r for r in caplog.records if "has recorded no loss" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.WARNING
    assert told[0].getMessage().startswith("losswatch: run no-loss has recorded no loss in 5 steps")
    assert "TorchWatcher.step(step, loss) is called without the loss" in told[0].getMessage()


def test_importing_the_client_and_the_helper_imports_no_framework() -> None:
    code = ("import sys, losswatch.client, losswatch.client.integrations.torch, losswatch.client.acting;"
            "bad = {'torch', 'numpy', 'lightning', 'transformers', 'keras', 'ray'} & set(sys.modules);"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_watcher_tells_the_service_the_optimizer_and_far_too_small_sgd_steps_are_flagged(service_proc) -> None:
    # SGD with momentum at 1/1000 of a workable LR: the loss falls steadily, almost exactly as
    # much as the first-order prediction. Only the optimizer metadata the watcher adds lets the
    # service see that (the sgd_efficiency rule).
    run_id = f"torch-small-{uuid.uuid4().hex[:8]}"
    x, y = _data()
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    with Monitor(run_id=run_id, url=service_proc, project="torch-test", flush_interval=0.1) as mon:
        watch = TorchWatcher(mon, model, opt)
        assert mon.meta["optimizer"] == "SGD" and mon.meta["momentum"] == 0.9
        for step in range(400):
            xb, yb = x[(step * 32) % 256:][:32], y[(step * 32) % 256:][:32]
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            watch.step(step, loss)
            opt.step()
    run = get(service_proc, f"/v1/runs/{run_id}?project=torch-test")
    assert run["meta"]["optimizer"] == "SGD" and run["meta"]["momentum"] == 0.9
    alerts = get(service_proc, f"/v1/runs/{run_id}/alerts?project=torch-test")["alerts"]
    small = [a for a in alerts if a["detector"] == "sgd_efficiency"]
    assert small and small[0]["action"]["type"] == "scale_lr" and small[0]["action"]["factor"] > 1


def test_a_loop_that_clips_passes_its_norm_and_the_watcher_logs_that_one(service_proc) -> None:
    # clip_grad_norm_ returns the norm before clipping: the one that shows a blow-up
    run_id = f"torch-clip-{uuid.uuid4().hex[:8]}"
    x, y = _data()
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    norms, computed = [], []
    with Monitor(run_id=run_id, url=service_proc, flush_interval=0.1) as mon:
        watch = TorchWatcher(mon, model, opt)
        for step in range(10):
            loss = torch.nn.functional.mse_loss(model(x[:32]), y[:32])
            opt.zero_grad()
            loss.backward()
            computed.append(float(watch.grad_norm()))
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)  # clips hard
            assert watch.step(step, loss, grad_norm=gn) is gn
            norms.append(float(gn))
            opt.step()
    series = get(service_proc, f"/v1/runs/{run_id}/steps")["series"]
    assert series["grad_norm"] == pytest.approx(norms, rel=1e-6)
    assert norms == pytest.approx(computed, rel=1e-5) and min(norms) > 0.01  # before clipping


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: CI has none (docs/gpu.md)")
def test_watched_cuda_steps_never_wait_for_the_gpu(service_proc) -> None:
    # torch.cuda.set_sync_debug_mode("error") raises on any call that makes the host wait for
    # the GPU. It is process-wide, so the client's background thread, which reads the logged
    # tensors in one batched copy per flush (the one sync it makes, off the training thread),
    # is kept idle (long flush interval) while the steps run; the flush afterwards delivers them.
    run_id = f"torch-cuda-nosync-{uuid.uuid4().hex[:8]}"
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(4)]).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=20)
    x = torch.randn(128, 512, device=dev)
    losses, steps = [], 60
    with Monitor(run_id=run_id, url=service_proc, flush_interval=3600.0) as mon:
        watch = TorchWatcher(mon, model, opt, scheduler=sched)
        assert mon.flush(30)  # the metadata the watcher sent: the sender is idle from here on
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for step in range(steps):
                loss = model(x).square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                watch.step(step, loss)
                opt.step()
                sched.step()
                losses.append(loss.detach())
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert mon.stats["buffered"] == steps  # nothing was read while the steps ran
        assert mon.flush(30)
    series = get(service_proc, f"/v1/runs/{run_id}/steps")["series"]
    assert series["step"] == list(range(steps))
    assert series["loss"] == pytest.approx([float(v) for v in losses], rel=1e-6)
    assert all(g is not None and g > 0 for g in series["grad_norm"])
    assert series["lr"][0] == pytest.approx(1e-5) and series["lr"][-1] == pytest.approx(1e-4)


def test_a_monitor_and_a_watcher_both_asked_to_act_share_one_actor_and_cut_once_per_decision(service_proc) -> None:
    import math
    import warnings

    run_id = f"torch-two-act-{uuid.uuid4().hex[:8]}"
    x, y = _data()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    lr0, steps = 4.0, 80
    opt = torch.optim.SGD(model.parameters(), lr=lr0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Monitor(run_id=run_id, url=service_proc, flush_interval=0.05, act=True, optimizer=opt,
                     actor_options={"cooldown_steps": 10}) as mon:
            watch = TorchWatcher(mon, model, opt, scheduler=sched, act=True, actor_options={"cooldown_steps": 10})
            for step in range(steps):
                xb, yb = x[(step * 32) % 256:][:32], y[(step * 32) % 256:][:32]
                loss = torch.nn.functional.mse_loss(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                seen.append(opt.param_groups[0]["lr"])
                watch.step(step, loss)  # the Monitor's log() and the watcher both offer the step
                if step % 5 == 0:
                    mon.flush(5.0)
                opt.step()
                sched.step()
    shared = [w for w in caught if "asked for twice" in str(w.message)]
    assert len(shared) == 1  # said once
    assert watch.actor is mon.actor and watch.actor.scheduler is sched  # the watcher's scheduler filled in
    _, applied = hot_run_checks(service_proc, run_id, watch.actor)  # each applied action reported once
    cuts = [a for a in applied if a["action"]["type"] == "scale_lr"]
    assert cuts and len({a["step"] for a in applied}) == len(applied)
    for cut in cuts:
        k = cut["step"]
        if k + 1 < steps:
            cosine = (1 + math.cos(math.pi * (k + 1) / steps)) / (1 + math.cos(math.pi * k / steps))
            # once: the next step's LR is the cosine step of the cut LR, not of a cut squared
            assert seen[k + 1] == pytest.approx(seen[k] * cut["action"]["factor"] * cosine, rel=1e-6)
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(lr0 * math.prod(c["action"]["factor"] for c in cuts))
