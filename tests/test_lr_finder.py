"""LR range test (client helper, real torch training) and its analysis (detectors.lr_finder),
plus ``losswatch lr-find`` as a real subprocess."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from losswatch.client.lr_range_test import LRRangeTest, lr_range_test
from losswatch.detectors.lr_finder import read_sweep, suggest_lr

torch.set_num_threads(1)


def _digits_task(seed=0):
    d = load_digits()
    X = torch.tensor(d.data / 16, dtype=torch.float32)
    y = torch.tensor(d.target)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)

    def step():
        idx = torch.randint(0, len(X), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def train_loss_after(lr, steps=150):
        """Train a fresh copy at lr; mean loss over the last 30 steps."""
        torch.manual_seed(seed + 1)
        m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        o = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
        gg = torch.Generator().manual_seed(seed + 2)
        tail = []
        for s in range(steps):
            idx = torch.randint(0, len(X), (32,), generator=gg)
            loss = torch.nn.functional.cross_entropy(m(X[idx]), y[idx])
            o.zero_grad()
            loss.backward()
            o.step()
            if s >= steps - 30:
                tail.append(loss.item())
        return float(np.mean(tail))

    return model, opt, step, train_loss_after


@pytest.fixture(scope="module")
def digits_sweep():
    model, opt, step, _ = _digits_task()
    rt = lr_range_test(model, opt, step, num_steps=300, start_lr=1e-6, end_lr=10)
    return rt


def test_range_test_restores_state_and_stops_when_loss_explodes():
    model, opt, step, _ = _digits_task()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rt = lr_range_test(model, opt, step, num_steps=300, start_lr=1e-6, end_lr=10)
    assert "passed 4x its best" in rt.stopped_because or "became" in rt.stopped_because
    assert 50 < len(rt.lrs) < 300  # stopped early, before end_lr
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert opt.param_groups[0]["lr"] == 0.05 and opt.state_dict()["state"] == {}
    assert rt.lrs == sorted(rt.lrs) and rt.lrs[0] == pytest.approx(1e-6)


def test_suggestion_trains_well_on_the_real_task(digits_sweep):
    s = digits_sweep.suggestion
    assert s is not None and s.confidence == "high"
    assert s.min_lr <= s.suggested_lr <= s.max_lr < s.min_loss_lr <= s.exploded_at_lr
    _, _, _, train = _digits_task()
    grid = [10 ** e for e in np.arange(-4, 0.5, 0.5)]
    losses = {lr: train(lr) for lr in grid}
    best = min(losses.values())
    at_suggested = train(s.suggested_lr)
    # within 0.1 nats of the best LR of a half-decade grid, and better than a tiny LR
    assert at_suggested < best + 0.1, (s.suggested_lr, at_suggested, losses)
    assert at_suggested < losses[1e-4] - 0.5


def test_robust_to_sweep_length_noise_and_linear_spacing(digits_sweep):
    lrs, losses = np.array(digits_sweep.lrs), np.array(digits_sweep.losses)
    ref = digits_sweep.suggestion.suggested_lr
    rng = np.random.default_rng(1)
    variants = {
        "every 3rd point": (lrs[::3], losses[::3]),
        "10% noise": (lrs, losses * (1 + 0.1 * rng.standard_normal(len(losses)))),
        "narrower range": (lrs[lrs > 1e-4], losses[lrs > 1e-4]),
    }
    for name, (x, y) in variants.items():
        got = suggest_lr(x, y).suggested_lr
        assert ref / 3 < got < ref * 3, (name, got, ref)
    # a linear sweep over the same task: most points at large LRs
    model, opt, step, _ = _digits_task()
    lin = lr_range_test(model, opt, step, num_steps=300, start_lr=1e-4, end_lr=2.0, mode="linear")
    assert ref / 4 < lin.suggestion.suggested_lr < ref * 4


def test_sweep_that_never_falls_or_never_rises_says_so():
    lrs = [10 ** (-1 + 2 * i / 99) for i in range(100)]
    s = suggest_lr(lrs, [1.0 + x for x in lrs])  # only rises: range starts too high
    assert s.confidence == "low" and "did not fall" in s.reason and s.suggested_lr < lrs[0]
    s2 = suggest_lr(lrs, [2.0 - math.log10(x) * 0.5 for x in lrs])  # still falling at the end
    assert s2.confidence == "low" and "sweep higher" in s2.reason


def test_unusable_sweeps_raise_clear_errors():
    with pytest.raises(ValueError, match="at least 5 finite points"):
        suggest_lr([1e-3, 1e-2, 1e-1, 1.0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="finite positive"):
        suggest_lr([0.0, 1e-3, 1e-2, 1e-1, 1, 2], [1] * 6)
    with pytest.raises(ValueError, match="covers only"):
        suggest_lr([1.0, 1.01, 1.02, 1.03, 1.04, 1.05], [1] * 6)
    with pytest.raises(ValueError):
        LRRangeTest(None, None, start_lr=1.0, end_lr=0.1)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "losswatch.service.cli", "lr-find", *args],
                          capture_output=True, text=True, timeout=60)


def test_lr_find_command_csv_and_jsonl(digits_sweep, tmp_path):
    csv_path = tmp_path / "sweep.csv"
    digits_sweep.save(str(csv_path))
    r = _cli(str(csv_path), "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert list(out)[:4] == ["suggested_lr", "min_lr", "max_lr", "reason"]
    assert out["suggested_lr"] == pytest.approx(digits_sweep.suggestion.suggested_lr)
    jl = tmp_path / "sweep.jsonl"
    jl.write_text("".join(json.dumps({"lr": a, "loss": b}) + "\n" for a, b in zip(digits_sweep.lrs, digits_sweep.losses)))
    r2 = _cli(str(jl), "--format", "json")
    assert json.loads(r2.stdout)["suggested_lr"] == pytest.approx(out["suggested_lr"])
    r3 = _cli(str(csv_path), "--plot", str(tmp_path / "sweep.png"))
    assert r3.returncode == 0 and "suggested lr" in r3.stdout and "why" in r3.stdout
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_lr_find_keeps_nan_as_the_explosion(tmp_path):
    p = tmp_path / "s.csv"
    rows = ["lr,loss"] + [f"{10 ** (-5 + i / 10)},{2.0 - 0.015 * i}" for i in range(40)] + ["0.1,nan", "0.2,inf"]
    p.write_text("\n".join(rows) + "\n")
    lrs, losses = read_sweep(str(p))
    assert math.isnan(losses[-2]) and math.isinf(losses[-1])
    out = json.loads(_cli(str(p), "--format", "json").stdout)
    assert out["exploded_at_lr"] == pytest.approx(0.1)


@pytest.mark.parametrize("content,msg", [
    ("learning,loss\n1,2\n", "must name columns 'lr' and 'loss'"),
    ("lr,loss\n0.1,abc\n", "s.csv:2: loss is 'abc', not a number"),
    ('{"lr": 0.1}\n', "needs keys 'lr' and 'loss'"),
    ('{"lr": 0.1, "loss": 1}\n{oops\n', "s.csv:2: not JSON"),
    ("lr,loss\n", "no sweep points"),
])
def test_lr_find_bad_files(tmp_path, content, msg):
    p = tmp_path / "s.csv"
    p.write_text(content)
    r = _cli(str(p))
    assert r.returncode == 2 and msg in r.stderr and r.stdout == ""


def test_lr_find_missing_file(tmp_path):
    r = _cli(str(tmp_path / "nope.csv"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_range_test_streams_to_the_service(service_proc):
    model, opt, step, _ = _digits_task()
    rt = lr_range_test(model, opt, step, num_steps=60, start_lr=1e-5, end_lr=1.0, url=service_proc,
                       run_id="lrrt-stream")
    with urllib.request.urlopen(f"{service_proc}/v1/runs/lrrt-stream/steps") as r:
        body = json.loads(r.read())
    assert body["total"] == len(rt.lrs)
    assert body["series"]["lr"] == pytest.approx(rt.lrs)
    assert body["series"]["loss"] == pytest.approx(rt.losses)
    with urllib.request.urlopen(f"{service_proc}/v1/runs/lrrt-stream") as r:
        meta = json.loads(r.read())
    assert "lr_range_test" in json.dumps(meta)


def test_state_is_restored_when_the_loop_raises():
    model, opt, step, _ = _digits_task()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="data loader died"):
        with LRRangeTest(model, opt, num_steps=50) as rt:
            for k in range(50):
                rt.record(step())
                if k == 20:
                    raise RuntimeError("data loader died")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert opt.param_groups[0]["lr"] == 0.05 and len(rt.lrs) == 21
    assert rt.stopped_because == "the loop ended before the sweep did"
