"""Hugging Face Trainer + LosswatchCallback against a real service: a tiny GPT-2 (built from a
config, nothing downloaded) trained on every device present (the CPU here and in CI; the CPU and
CUDA on a GPU machine, docs/gpu.md); the service must hold every step with the loss,
grad-norm and LR the Trainer itself logged (its log_history), and a far too high LR must raise an
alert there (and, with act=True, be cut by the Actor, reported to the service)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import uuid

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from losswatch.client.integrations.huggingface import LosswatchCallback  # noqa: E402
from service_helpers import get_json as get  # noqa: E402
from service_helpers import hot_run_checks

torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class WaitForAdvice(transformers.TrainerCallback):
    """Tiny steps finish before the service's advice comes back: every few steps wait for the
    round trip, so the acting test does not race it."""

    def __init__(self, cb, every: int = 5) -> None:
        self.cb, self.every = cb, every

    def on_step_end(self, args, state, control, **kw):
        if state.global_step % self.every == 0 and self.cb.monitor is not None:
            self.cb.monitor.flush(5.0)


def train(url: str, run_id: str, lr: float, steps: int = 20, device: str = "cpu", args_kw: dict | None = None,
          evaluate: bool = False, **cb_kw):
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=64, n_positions=32)
    model = GPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(0)
    # a learnable language: each next token is the previous one + 1 (mod 64)
    starts = torch.randint(0, 64, (256, 1), generator=g)
    seqs = (starts + torch.arange(16)) % 64
    data = [{"input_ids": s, "labels": s} for s in seqs]
    args = TrainingArguments(**{
        "output_dir": f"/tmp/losswatch-hf-{run_id}", "use_cpu": device == "cpu", "report_to": [],
        "max_steps": steps, "logging_steps": 1, "per_device_train_batch_size": 8, "save_strategy": "no",
        "learning_rate": lr, "disable_tqdm": True, "lr_scheduler_type": "linear", "max_grad_norm": 1e9,
        **(args_kw or {})})
    cb = LosswatchCallback(run_id=run_id, project="hf-test", url=url,
                           monitor_options={"flush_interval": 0.1}, **cb_kw)
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:16] if evaluate else None,
                      callbacks=[cb, WaitForAdvice(cb)])
    trainer.train()
    return trainer, cb


@pytest.mark.parametrize("device", DEVICES)
def test_every_step_arrives_with_the_trainers_own_loss_grad_norm_and_lr(service_proc, device) -> None:
    run_id = f"hf-{device}-{uuid.uuid4().hex[:8]}"
    trainer, _ = train(service_proc, run_id, lr=1e-3, device=device)
    assert trainer.args.device.type == device
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 20
    series = get(service_proc, f"/v1/runs/{run_id}/steps?project=hf-test")["series"]
    assert series["step"] == [h["step"] for h in logged]
    assert series["loss"] == pytest.approx([h["loss"] for h in logged], rel=1e-6)
    assert series["grad_norm"] == pytest.approx([h["grad_norm"] for h in logged], rel=1e-6)
    assert series["lr"] == pytest.approx([h["learning_rate"] for h in logged], rel=1e-9)
    run = get(service_proc, f"/v1/runs/{run_id}?project=hf-test")
    assert json.dumps(run).count("hf-test") >= 1  # grouped under its project


@pytest.mark.parametrize("device", DEVICES)
def test_far_too_high_lr_raises_an_alert_and_acting_cuts_it(service_proc, device) -> None:
    run_id = f"hf-hot-{device}-{uuid.uuid4().hex[:8]}"
    trainer, cb = train(service_proc, run_id, lr=3.0, steps=40, device=device, act=True,
                        actor_options={"cooldown_steps": 5, "min_persist_steps": 1})
    alerts, applied = hot_run_checks(service_proc, run_id, cb.actor, "hf-test")
    # the service has the report, and the LR the Trainer logged after the first action is lower
    # than what its own (linear) schedule gave before it
    if applied[0]["action"]["type"] == "scale_lr":
        # the Trainer's own scheduler carries the cut: its base LR and the LR it logged next
        assert trainer.lr_scheduler.base_lrs[0] == pytest.approx(3.0 * cb.actor.lr_scale)
        lrs = {h["step"]: h["learning_rate"] for h in trainer.state.log_history if "loss" in h}
        k = applied[0]["step"]
        if k + 1 in lrs:
            assert lrs[k + 1] < 0.5 * lrs[k]


def test_at_the_default_logging_steps_every_step_arrives_and_a_diverging_run_is_told(service_proc, caplog) -> None:
    """HF logs every 500 steps by default: the callback still records every optimizer step
    (loss from the model's output, LR from the optimizer), says once that the grad-norm comes
    only at logged steps (the Trainer clips before a callback sees it), prints where to read the
    run, and logs the alert the service raises."""
    caplog.set_level(logging.INFO, logger="losswatch")
    run_id = f"hf-default-{uuid.uuid4().hex[:8]}"
    defaults = transformers.TrainingArguments(output_dir="/tmp/losswatch-hf-defaults")
    assert defaults.logging_steps == 500 and defaults.max_grad_norm == 1.0
    trainer, _ = train(service_proc, run_id, lr=3.0, steps=40,
                       args_kw={"logging_steps": defaults.logging_steps, "max_grad_norm": defaults.max_grad_norm})
    series = get(service_proc, f"/v1/runs/{run_id}/steps?project=hf-test")["series"]
    assert series["step"] == list(range(1, 41))
    assert all(v is not None for v in series["loss"]) and all(v is not None for v in series["lr"])
    # the LR each step used: the linear schedule from 3.0 down to 0 over 40 steps
    assert series["lr"] == pytest.approx([3.0 * (40 - s) / 40 for s in range(40)], rel=1e-6)
    alerts = get(service_proc, f"/v1/runs/{run_id}/alerts?project=hf-test")["alerts"]
    told = [a for a in alerts if a["severity"] in ("warning", "critical")]
    assert told, alerts

    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "losswatch"]
    assert (logging.INFO, f"losswatch: run {run_id} -> {service_proc}/runs/{run_id}?project=hf-test "
                          f"(API {service_proc}/v1/runs/{run_id}?project=hf-test)") in lines
    assert sum("grad-norm only at the Trainer's logged steps (logging_steps=500)" in m for _, m in lines) == 1
    events = [re.match(rf"losswatch: run {run_id} step \d+: (warning|critical) (\S+) (raised|escalated): ", m)
              for lvl, m in lines if lvl == logging.WARNING]
    assert {a["detector"] for a in told} <= {e.group(2) for e in events if e}, lines


def test_with_gradient_accumulation_the_step_loss_is_the_trainers_own(service_proc) -> None:
    """GPT-2 takes num_items_in_batch: each micro-batch's loss is already divided by the whole
    step's token count, so the step's loss is their sum (what the Trainer logs)."""
    run_id = f"hf-accum-{uuid.uuid4().hex[:8]}"
    trainer, _ = train(service_proc, run_id, lr=1e-3, steps=6, args_kw={"gradient_accumulation_steps": 2})
    logged = [h for h in trainer.state.log_history if "loss" in h]
    series = get(service_proc, f"/v1/runs/{run_id}/steps?project=hf-test")["series"]
    assert series["step"] == [h["step"] for h in logged] == list(range(1, 7))
    assert series["loss"] == pytest.approx([h["loss"] for h in logged], rel=1e-6)


@pytest.mark.parametrize("strategy", ["steps", "epoch"])
def test_each_step_once_with_its_logged_grad_norm_and_its_eval_loss(service_proc, strategy) -> None:
    """Evaluations every 5 steps or at each epoch's end (decided after the step's on_step_end):
    every step arrives once, the logged steps with the Trainer's grad-norm, the evaluated ones
    with their eval_loss."""
    run_id = f"hf-eval-{strategy}-{uuid.uuid4().hex[:8]}"
    trainer, _ = train(service_proc, run_id, lr=1e-3, evaluate=True, args_kw={
        "max_steps": -1, "num_train_epochs": 2, "per_device_train_batch_size": 32, "logging_steps": 4,
        "max_grad_norm": 1.0, "eval_strategy": strategy, "eval_steps": 5})
    series = get(service_proc, f"/v1/runs/{run_id}/steps?project=hf-test")["series"]
    assert series["step"] == list(range(1, 17))
    assert all(v is not None for v in series["loss"])
    logged = {h["step"]: h for h in trainer.state.log_history if "loss" in h}
    assert {s for s, g in zip(series["step"], series["grad_norm"]) if g is not None} == set(logged) == {4, 8, 12, 16}
    for s, g in zip(series["step"], series["grad_norm"]):
        if g is not None:
            assert g == pytest.approx(logged[s]["grad_norm"], rel=1e-6)
    evaluated = {h["step"]: h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h}
    assert evaluated and set(evaluated) == ({5, 10, 15, 16} if strategy == "steps" else {8, 16})
    got = {s: v for s, v in zip(series["step"], series["val_loss"]) if v is not None}
    assert got == pytest.approx(evaluated, rel=1e-6)


@pytest.mark.parametrize("logging_strategy", ["steps", "no"])
def test_a_model_output_without_loss_is_said_once_with_the_setting_to_change(service_proc, caplog,
                                                                           logging_strategy) -> None:
    """Label smoothing takes the labels away from the model: its output carries no loss, so only
    the Trainer's logged steps can be recorded, and the callback says which setting changes that;
    with no logging at all nothing is recorded, and after a few steps it says that too."""
    caplog.set_level(logging.INFO, logger="losswatch")
    run_id = f"hf-smooth-{uuid.uuid4().hex[:8]}"
    trainer, _ = train(service_proc, run_id, lr=1e-3, steps=6, warn_no_loss_after=(4, 0.0), args_kw={
        "logging_steps": 3, "logging_strategy": logging_strategy, "label_smoothing_factor": 0.1})
    told = [r for r in caplog.records if "carries no loss" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.WARNING
    assert "logging_steps=3" in told[0].getMessage() and "set logging_steps=1" in told[0].getMessage()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    series = get(service_proc, f"/v1/runs/{run_id}/steps?project=hf-test")["series"]
    assert series["step"] == [h["step"] for h in logged] == ([3, 6] if logging_strategy == "steps" else [])
    assert series["loss"] == pytest.approx([h["loss"] for h in logged], rel=1e-6)
    nothing = [r.getMessage() for r in caplog.records if "has recorded no loss" in r.getMessage()]
    assert len(nothing) == (0 if logging_strategy == "steps" else 1), nothing
    if nothing:
        assert nothing[0].startswith(f"losswatch: run {run_id} has recorded no loss in 4 steps")


def test_importing_the_integration_does_not_import_transformers() -> None:
    code = ("import sys, losswatch.client, losswatch.client.integrations.huggingface as h;"
            "assert 'transformers' not in sys.modules and 'torch' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
