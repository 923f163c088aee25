"""Keras 3 (torch backend) + LosswatchCallback against a real service: a tiny regression model
fitted on CPU; the service must hold every batch's own loss (recomputed here from the weights at
batch begin, not Keras' running mean), its grad-norm and LR, and a far too high LR must raise an
alert (with act=True: the LR is cut, or training stopped, and the service gets the report)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import uuid

import pytest

os.environ["KERAS_BACKEND"] = "torch"
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from losswatch.client.integrations.keras import LosswatchCallback  # noqa: E402
from service_helpers import get_json as get  # noqa: E402
from service_helpers import hot_run_checks

torch.set_num_threads(1)

BS = 16
N = 96  # 6 batches per epoch


class Reference(keras.callbacks.Callback):
    """Measures each batch's loss, grad-norm and LR independently of the callback under test."""

    def __init__(self, x, y) -> None:
        super().__init__()
        self.x, self.y = x, y
        self.seen: list[dict[str, float]] = []

    def on_train_batch_begin(self, batch, logs=None):
        xb = self.x[batch * BS:(batch + 1) * BS]
        yb = self.y[batch * BS:(batch + 1) * BS]
        with torch.no_grad():
            pred = self.model(torch.as_tensor(xb), training=False)
            loss = float(torch.mean((pred - torch.as_tensor(yb)) ** 2))
        self.seen.append({"loss": loss, "lr": float(self.model.optimizer.learning_rate)})

    def on_train_batch_end(self, batch, logs=None):
        grads = [v.value.grad.flatten() for v in self.model.trainable_variables]
        self.seen[-1]["grad_norm"] = float(torch.cat(grads).norm())


class WaitForAdvice(keras.callbacks.Callback):
    """Tiny steps finish before the service's advice comes back: every few batches wait for the
    round trip, so the acting test does not race it."""

    def __init__(self, cb, every: int = 3) -> None:
        super().__init__()
        self.cb, self.every = cb, every

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.every == 0 and self.cb.monitor is not None:
            self.cb.monitor.flush(5.0)


def fit(url: str, run_id: str, lr, epochs: int, **cb_kw):
    keras.utils.set_random_seed(0)
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(N, 8, generator=rng).numpy()
    y = (torch.as_tensor(x) @ torch.randn(8, 1, generator=rng)).numpy()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    ref = Reference(x, y)
    cb = LosswatchCallback(run_id=run_id, project="keras-test", url=url,
                           monitor_options={"flush_interval": 0.1}, **cb_kw)
    model.fit(x, y, batch_size=BS, epochs=epochs, shuffle=False, verbose=0, callbacks=[ref, cb, WaitForAdvice(cb)])
    return ref, cb, model


def test_every_batch_arrives_with_its_own_loss_grad_norm_and_lr(service_proc) -> None:
    run_id = f"keras-{uuid.uuid4().hex[:8]}"
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=1, decay_rate=0.9)
    ref, _, _ = fit(service_proc, run_id, lr=schedule, epochs=3)
    series = get(service_proc, f"/v1/runs/{run_id}/steps?project=keras-test")["series"]
    assert series["step"] == list(range(18))
    assert series["loss"] == pytest.approx([r["loss"] for r in ref.seen], rel=1e-4)
    assert series["grad_norm"] == pytest.approx([r["grad_norm"] for r in ref.seen], rel=1e-5)
    assert series["lr"] == pytest.approx([r["lr"] for r in ref.seen], rel=1e-6)
    assert series["lr"][1] == pytest.approx(0.045, rel=1e-6)  # the decay is visible step by step
    meta = get(service_proc, f"/v1/runs/{run_id}?project=keras-test")["meta"]
    assert meta["optimizer"] == "SGD" and meta["momentum"] == 0.0  # what sgd_efficiency needs


def test_far_too_high_lr_raises_an_alert_and_acting_responds(service_proc, caplog) -> None:
    caplog.set_level(logging.INFO, logger="losswatch")
    run_id = f"keras-hot-{uuid.uuid4().hex[:8]}"
    ref, cb, model = fit(service_proc, run_id, lr=1.5, epochs=8, act=True, actor_options={"cooldown_steps": 5})
    alerts, applied = hot_run_checks(service_proc, run_id, cb.actor, "keras-test")
    # told on the losswatch logger: where to read the run, then each serious alert at WARNING
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "losswatch"]
    assert lines[0] == (logging.INFO, f"losswatch: run {run_id} -> {service_proc}/runs/{run_id}?project=keras-test "
                                      f"(API {service_proc}/v1/runs/{run_id}?project=keras-test)")
    events = [re.match(rf"losswatch: run {run_id} step \d+: (warning|critical) (\S+) (raised|escalated): ", m)
              for lvl, m in lines if lvl == logging.WARNING]
    serious = {a["detector"] for a in alerts["alerts"] if a["severity"] in ("warning", "critical")}
    assert serious <= {e.group(2) for e in events if e}, lines
    kinds = {a["action"]["type"] for a in applied}
    if "scale_lr" in kinds:
        assert float(model.optimizer.learning_rate) < 1.5
    if "stop" in kinds:
        assert len(ref.seen) < 8 * N // BS


def test_importing_the_integration_does_not_import_keras() -> None:
    code = ("import sys, losswatch.client.integrations.keras;"
            "assert not {'keras', 'torch'} & set(sys.modules), 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
