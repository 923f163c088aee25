"""torch tensors through the client: no host-device sync in log(), values read in batches, and a
real (tiny) torch training run with a far too high LR raising alerts through the real service."""

import math
import threading
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from losswatch.client import Monitor
from service_helpers import get_json as get

torch.set_num_threads(1)

# ops that copy a value to the host: what a sync is made of on an accelerator
READS = ("_local_scalar_dense", "item", "_to_copy", "copy_", "to", "tolist", "equal")


class OpRecorder(TorchDispatchMode):
    """Records every aten op dispatched, with the thread that ran it."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append((func.__name__.split(".")[0], threading.current_thread().name))
        return func(*args, **(kwargs or {}))


def test_log_reads_no_tensor_value_in_the_training_thread(service_proc):
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    with Monitor(run_id="torch-nosync", url=service_proc, flush_interval=60.0) as mon:
        losses, norms = [], []
        rec = OpRecorder()
        with rec:
            for step in range(200):
                loss = (w * (step + 1)).pow(2).sum() / 1000
                gn = torch.linalg.vector_norm(w) * (step + 1)
                losses.append(loss)
                norms.append(gn)
                lr, scale = torch.tensor(0.01), torch.tensor(2.0)
                n_before = len(rec.ops)
                mon.log(step, loss=loss, grad_norm=gn, lr=lr, scale=scale)
                logged_ops = [op for op, _ in rec.ops[n_before:]]
                # at most a detach (no copy, no read); never .item()/.tolist()/.cpu()
                assert set(logged_ops) <= {"detach"}, logged_ops
        assert mon.stats["buffered"] == 200  # nothing read yet: the tensors wait in the buffer
        assert mon.flush(20)
    s = get(service_proc, "/v1/runs/torch-nosync/steps")["series"]
    assert s["step"] == list(range(200))
    assert s["loss"] == pytest.approx([float(x.detach()) for x in losses], rel=1e-6)
    assert s["grad_norm"] == pytest.approx([float(x.detach()) for x in norms], rel=1e-6)
    assert s["lr"][5] == pytest.approx(0.01) and s["extra"][5] == {"scale": 2.0}


def test_a_nan_float_loss_next_to_a_tensor_grad_norm_reads_no_tensor_in_log():
    # the NaN rule runs in log() for the float; the tensor beside it must stay unread (no sync)
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon = Monitor(run_id="torch-nan-float", url="http://127.0.0.1:9", flush_interval=60.0, timeout=0.2)
        rec = OpRecorder()
        with rec:
            gn = torch.linalg.vector_norm(w)
            n_before = len(rec.ops)
            mon.log(3, loss=float("nan"), grad_norm=gn)
            logged_ops = [op for op, _ in rec.ops[n_before:]]
        assert set(logged_ops) <= {"detach"}, logged_ops
        assert mon.health == "critical" and mon.recommendation["type"] == "rollback"
        mon.close(timeout=0.1)


def test_a_nan_tensor_is_caught_when_the_batch_is_read(service_proc):
    with Monitor(run_id="torch-nan", url=service_proc) as mon:
        for step in range(20):
            mon.log(step, loss=torch.tensor(1.0 / (step + 1)), grad_norm=torch.tensor(0.1))
        mon.log(20, loss=torch.tensor(float("nan")), grad_norm=torch.tensor(float("inf")))
        assert mon.flush(20)
        nan = [a for a in mon.alerts if a["kind"] == "nan"]
    assert [a["step"] for a in nan] == [20]
    assert get(service_proc, "/v1/runs/torch-nan/steps")["series"]["loss"][20] == "NaN"


def train(mon, lr, steps=300, seed=0):
    """A tiny real regression MLP trained with SGD; returns the losses (floats)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=g)
    true_w = torch.randn(8, 1, generator=g)
    y = torch.tanh(x @ true_w) + 0.05 * torch.randn(512, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    out = []
    for step in range(steps):
        idx = torch.randint(0, 512, (64,), generator=g)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        opt.step()
        mon.log(step, loss=loss, grad_norm=gn, lr=opt.param_groups[0]["lr"])
        out.append(loss.item())
    return out


def test_torch_training_with_a_far_too_high_lr_raises_alerts_through_the_service(service_proc):
    got = []
    with Monitor(run_id="torch-lr-too-high", url=service_proc, project="clienttests",
                 meta={"model": "mlp-8-32-1", "optimizer": "sgd"}, on_alert=got.append) as mon:
        losses = train(mon, lr=3.0)
        assert mon.flush(30)
    assert not all(math.isfinite(v) for v in losses[-50:]) or max(losses[-50:]) > 10 * min(losses[:50])
    served = get(service_proc, "/v1/runs/torch-lr-too-high/alerts?project=clienttests")["alerts"]
    kinds = {a["kind"] for a in served}
    assert kinds & {"divergence", "nan", "grad_explosion"}, served
    from_service = [a for a in mon.alerts if a["detector"] != "client.nan"]
    assert {a["id"] for a in from_service} <= {a["id"] for a in served}  # the same alerts, by id
    assert from_service and got
    assert mon.health == "critical" and mon.recommendation is not None
    run = get(service_proc, "/v1/runs/torch-lr-too-high?project=clienttests")
    assert run["n_steps"] == 300 and run["health"] == "critical"


def test_the_same_training_at_a_sane_lr_stays_quiet(service_proc):
    with Monitor(run_id="torch-lr-fine", url=service_proc) as mon:
        losses = train(mon, lr=0.05)
        assert mon.flush(30)
    assert losses[-1] < losses[0]
    served = get(service_proc, "/v1/runs/torch-lr-fine/alerts")["alerts"]
    assert [a for a in served if a["severity"] == "critical"] == []
    assert mon.health != "critical"
