"""Lightning + LosswatchCallback against a real service: a tiny regression model, trained on every
device present (the CPU here and in CI; the CPU and CUDA on a GPU machine, docs/gpu.md); the
service must hold every optimizer step with the loss, grad-norm and LR that the module itself
measured (by concatenating its gradients, independently of the callback), and a far too high LR
must raise an alert (with act=True: the Actor cuts the LR and the service gets the report)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import uuid

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

from losswatch.client.integrations.lightning import LosswatchCallback  # noqa: E402
from service_helpers import get_json as get  # noqa: E402
from service_helpers import hot_run_checks

torch.set_num_threads(1)

ACCELERATORS = ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])


class Regression(L.LightningModule):
    """y = X w + noise, learned by a 2-layer MLP with SGD and a StepLR schedule."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.lr = lr
        self.seen: dict[int, dict[str, float]] = {}  # step -> what the module measured itself

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.seen.setdefault(self.global_step, {})["loss"] = float(loss)
        return loss

    def on_before_optimizer_step(self, optimizer):
        flat = torch.cat([p.grad.flatten() for p in self.parameters() if p.grad is not None])
        self.seen[self.global_step].update(grad_norm=float(flat.norm()), lr=optimizer.param_groups[0]["lr"])

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 5, 0.5),
                                                   "interval": "step"}}


class WaitForAdvice(L.Callback):
    """A real step takes long enough for the service's advice to come back; these tiny ones do
    not, so every few steps wait for the round trip (the test then does not race it)."""

    def __init__(self, cb, every: int = 5) -> None:
        self.cb, self.every = cb, every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0 and self.cb.monitor is not None:
            self.cb.monitor.flush(5.0)


def fit(url: str, run_id: str, lr: float, steps: int, accelerator: str = "cpu", **cb_kw):
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1) + 0.1 * torch.randn(256, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=False)
    model = Regression(lr)
    cb = LosswatchCallback(run_id=run_id, project="pl-test", url=url, monitor_options={"flush_interval": 0.1}, **cb_kw)
    trainer = L.Trainer(max_steps=steps, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cb, WaitForAdvice(cb)])
    trainer.fit(model, loader)
    return model, cb, trainer


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_every_step_arrives_with_the_modules_own_loss_grad_norm_and_lr(service_proc, accelerator) -> None:
    run_id = f"pl-{accelerator}-{uuid.uuid4().hex[:8]}"
    model, _, _ = fit(service_proc, run_id, lr=0.05, steps=20, accelerator=accelerator)
    series = get(service_proc, f"/v1/runs/{run_id}/steps?project=pl-test")["series"]
    steps = sorted(model.seen)
    assert steps == list(range(20))
    assert series["step"] == steps
    assert series["loss"] == pytest.approx([model.seen[s]["loss"] for s in steps], rel=1e-6)
    assert series["grad_norm"] == pytest.approx([model.seen[s]["grad_norm"] for s in steps], rel=1e-5)
    assert series["lr"] == pytest.approx([model.seen[s]["lr"] for s in steps], rel=1e-12)
    assert series["lr"][0] == 0.05 and series["lr"][5] == 0.025  # the StepLR schedule is visible
    meta = get(service_proc, f"/v1/runs/{run_id}?project=pl-test")["meta"]
    assert meta["optimizer"] == "SGD" and meta["momentum"] == 0.0  # what sgd_efficiency needs


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_far_too_high_lr_raises_an_alert_and_acting_cuts_it(service_proc, accelerator) -> None:
    run_id = f"pl-hot-{accelerator}-{uuid.uuid4().hex[:8]}"
    model, cb, trainer = fit(service_proc, run_id, lr=2.0, steps=40, accelerator=accelerator, act=True,
                             actor_options={"cooldown_steps": 5})
    alerts, applied = hot_run_checks(service_proc, run_id, cb.actor, "pl-test")
    kinds = {a["action"]["type"] for a in applied}
    if "scale_lr" in kinds:
        # the StepLR schedule went on, scaled: the final LR is the schedule's times the cuts
        assert cb.actor.lr_scale < 1
        lr_now = trainer.optimizers[0].param_groups[0]["lr"]
        assert lr_now == pytest.approx(2.0 * 0.5 ** (trainer.global_step // 5) * cb.actor.lr_scale, rel=1e-9)
    if "stop" in kinds:
        assert trainer.global_step < 40


def test_the_run_id_it_made_up_and_the_alerts_are_told_on_the_losswatch_logger(service_proc, caplog) -> None:
    caplog.set_level(logging.INFO, logger="losswatch")
    model, cb, _ = fit(service_proc, None, lr=2.0, steps=30)  # no run id, no Lightning logger
    run_id = cb.monitor.run_id
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "losswatch"]
    assert lines[0] == (logging.INFO, f"losswatch: run {run_id} -> {service_proc}/runs/{run_id}?project=pl-test "
                                      f"(API {service_proc}/v1/runs/{run_id}?project=pl-test)")
    assert get(service_proc, f"/v1/runs/{run_id}/steps?project=pl-test")["series"]["step"] == sorted(model.seen)
    alerts = get(service_proc, f"/v1/runs/{run_id}/alerts?project=pl-test")["alerts"]
    serious = {a["detector"] for a in alerts if a["severity"] in ("warning", "critical")}
    assert serious, alerts
    events = [re.match(rf"losswatch: run {run_id} step \d+: (warning|critical) (\S+) (raised|escalated): ", m)
              for lvl, m in lines if lvl == logging.WARNING]
    assert serious <= {e.group(2) for e in events if e}, lines


class ManualNoLoss(Regression):
    """Manual optimization whose training_step returns nothing: Lightning steps, losswatch sees
    gradients and LR but never a loss."""

    def __init__(self, lr: float) -> None:
        super().__init__(lr)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()

    def on_before_optimizer_step(self, optimizer):
        pass


def test_a_training_step_that_returns_no_loss_is_said_once(caplog) -> None:
    caplog.set_level(logging.INFO, logger="losswatch")
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    cb = LosswatchCallback(run_id="pl-no-loss", warn_no_loss_after=(5, 0.0))
    trainer = L.Trainer(max_steps=12, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(ManualNoLoss(0.01), loader)
    told = [r.getMessage() for r in caplog.records if "has recorded no loss" in r.getMessage()]
    assert len(told) == 1 and told[0].startswith("losswatch: run pl-no-loss has recorded no loss in 5 steps")
    assert "training_step returns no loss" in told[0]


def test_importing_the_integration_does_not_import_lightning() -> None:
    code = ("import sys, losswatch.client.integrations.lightning;"
            "assert not {'lightning', 'pytorch_lightning', 'torch'} & set(sys.modules), 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
