"""Our closed-form schedules against PyTorch's and Hugging Face's own schedulers, step by step.

Tolerance: relative 1e-9 everywhere against torch's closed forms (``_get_closed_form_lr`` where
torch has one; CosineAnnealingWarmRestarts, CyclicLR and OneCycleLR compute every step from
scratch, so their ordinary ``step()`` *is* a closed form) and against Hugging Face's LambdaLR
schedules. Torch's chainable ``step()`` multiplies the previous LR by a ratio at every step and
drifts, but slowly: measured here at most 2e-14 relative over 5,000 steps (cosine, polynomial,
exponential, linear), so ours matches the chainable values to 1e-9 too;
``test_chainable_drift_is_torchs_not_ours`` checks that the drift is torch's, not ours.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as tls

from losswatch.detectors.schedules import SCHEDULES, build_schedule

REL = 1e-9
N = 400


def _opt(lr=0.1, adam=False):
    p = [torch.nn.Parameter(torch.zeros(1))]
    return torch.optim.AdamW(p, lr=lr) if adam else torch.optim.SGD(p, lr=lr, momentum=0.9)


def _close(ours: float, theirs: float) -> bool:
    return math.isclose(ours, theirs, rel_tol=REL, abs_tol=1e-300)


def _stepped(sched, n=N):
    """LR at steps 0..n-1 by calling torch's step() (the way a training loop does)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n):
            out.append(float(sched.get_last_lr()[0]))
            sched.optimizer.step()
            sched.step()
    return out


def _closed(sched, n=N):
    """LR at steps 0..n-1 from torch's own closed form (_get_closed_form_lr at last_epoch=s)."""
    out = []
    for s in range(n):
        sched.last_epoch = s
        out.append(float(sched._get_closed_form_lr()[0]))
    return out


def _assert_same(spec, theirs, n=N):
    ours = build_schedule(spec)
    bad = [(s, ours.lr_at(s), t) for s, t in zip(range(n), theirs) if not _close(ours.lr_at(s), t)]
    assert not bad, f"{spec}: {len(bad)} steps differ, first {bad[:3]}"


# --- PyTorch: schedulers with a closed form ------------------------------------------------

CLOSED_FORM_CASES = [
    ({"name": "step", "lr": 0.1, "step_size": 30, "gamma": 0.1}, lambda o: tls.StepLR(o, 30, 0.1)),
    ({"name": "step", "lr": 0.3, "step_size": 7, "gamma": 0.5}, lambda o: tls.StepLR(o, 7, 0.5)),
    ({"name": "multistep", "lr": 0.1, "milestones": [30, 60, 90]}, lambda o: tls.MultiStepLR(o, [30, 60, 90])),
    ({"name": "multistep", "lr": 0.1, "milestones": [90, 30, 200], "gamma": 0.3},
     lambda o: tls.MultiStepLR(o, [90, 30, 200], 0.3)),
    ({"name": "exponential", "lr": 0.1, "gamma": 0.99}, lambda o: tls.ExponentialLR(o, 0.99)),
    ({"name": "polynomial", "lr": 0.1, "total_steps": 300, "power": 2.0}, lambda o: tls.PolynomialLR(o, 300, 2.0)),
    ({"name": "polynomial", "lr": 0.1, "total_steps": 150}, lambda o: tls.PolynomialLR(o, 150, 1.0)),
    ({"name": "cosine", "lr": 0.1, "total_steps": 100, "min_lr": 1e-4},
     lambda o: tls.CosineAnnealingLR(o, 100, 1e-4)),  # N > 2*T_max: also the way back up
    ({"name": "constant", "lr": 0.1}, lambda o: tls.ConstantLR(o, factor=1.0, total_iters=5)),
]


@pytest.mark.parametrize("spec,make", CLOSED_FORM_CASES, ids=lambda c: c["name"] if isinstance(c, dict) else "")
def test_matches_torch_closed_form(spec, make):
    _assert_same(spec, _closed(make(_opt(spec["lr"]))))
    # and the ordinary chainable step() a training loop calls: its drift stays far below 1e-9
    _assert_same(spec, _stepped(make(_opt(spec["lr"]))))


# --- PyTorch: schedulers whose step() is already a closed form -------------------------------

NONCHAINABLE_CASES = [
    ({"name": "cosine_restarts", "lr": 0.1, "period": 50}, lambda o: tls.CosineAnnealingWarmRestarts(o, 50)),
    ({"name": "cosine_restarts", "lr": 0.1, "period": 10, "period_mult": 2, "min_lr": 1e-3},
     lambda o: tls.CosineAnnealingWarmRestarts(o, 10, 2, 1e-3)),
    ({"name": "cosine_restarts", "lr": 0.05, "period": 7, "period_mult": 3},
     lambda o: tls.CosineAnnealingWarmRestarts(o, 7, 3)),
    ({"name": "cyclic", "base_lr": 1e-3, "max_lr": 0.1, "step_size_up": 40},
     lambda o: tls.CyclicLR(o, 1e-3, 0.1, 40)),
    ({"name": "cyclic", "base_lr": 1e-3, "max_lr": 0.1, "step_size_up": 30, "step_size_down": 50, "mode": "triangular2"},
     lambda o: tls.CyclicLR(o, 1e-3, 0.1, 30, 50, mode="triangular2")),
    ({"name": "cyclic", "base_lr": 1e-3, "max_lr": 0.1, "step_size_up": 25, "mode": "exp_range", "gamma": 0.995},
     lambda o: tls.CyclicLR(o, 1e-3, 0.1, 25, mode="exp_range", gamma=0.995)),
    ({"name": "one_cycle", "max_lr": 0.1, "total_steps": N}, lambda o: tls.OneCycleLR(o, 0.1, total_steps=N)),
    ({"name": "one_cycle", "max_lr": 0.1, "total_steps": N, "anneal_strategy": "linear", "pct_start": 0.25},
     lambda o: tls.OneCycleLR(o, 0.1, total_steps=N, anneal_strategy="linear", pct_start=0.25)),
    ({"name": "one_cycle", "max_lr": 0.2, "total_steps": N, "three_phase": True, "div_factor": 10.0,
      "final_div_factor": 100.0},
     lambda o: tls.OneCycleLR(o, 0.2, total_steps=N, three_phase=True, div_factor=10.0, final_div_factor=100.0)),
]


@pytest.mark.parametrize("spec,make", NONCHAINABLE_CASES, ids=lambda c: c["name"] if isinstance(c, dict) else "")
def test_matches_torch_stepped(spec, make):
    lr = spec.get("lr", spec.get("base_lr", 0.1))
    _assert_same(spec, _stepped(make(_opt(lr))))


def test_one_cycle_with_adam_and_per_epoch_args():
    # OneCycleLR(epochs, steps_per_epoch) is the same schedule with total = epochs * spe
    sched = tls.OneCycleLR(_opt(0.01, adam=True), 0.01, epochs=4, steps_per_epoch=50)
    _assert_same({"name": "one_cycle", "max_lr": 0.01, "total_steps": 200}, _stepped(sched, 200), n=200)


@pytest.mark.parametrize("start_factor", [1 / 3, 0.01])
def test_linear_warmup_matches_torch_linear_lr(start_factor):
    # torch's LinearLR(start_factor, end_factor=1, total_iters) is a warmup to a constant
    sched = tls.LinearLR(_opt(0.1), start_factor=start_factor, end_factor=1.0, total_iters=50)
    _assert_same({"name": "warmup_constant", "lr": 0.1, "warmup_steps": 50, "start_factor": start_factor},
                 _closed(sched, 200), n=200)


def test_per_epoch_step_decay_matches_torch_stepped_per_epoch():
    # ResNet recipe: StepLR(step_size=30) stepped once per epoch of 5 optimizer steps
    opt = _opt(0.1)
    sched = tls.StepLR(opt, 30, 0.1)
    theirs = []
    for _epoch in range(100):
        for _ in range(5):
            theirs.append(float(sched.get_last_lr()[0]))
            opt.step()
        sched.step()
    _assert_same({"name": "step", "lr": 0.1, "step_size": 30, "interval": "epoch", "steps_per_epoch": 5},
                 theirs, n=500)


def test_chainable_drift_is_torchs_not_ours():
    """Torch's chainable cosine accumulates rounding error; ours equals its closed form."""
    spec = {"name": "cosine", "lr": 0.1, "total_steps": 5000, "min_lr": 1e-6}
    stepped = _stepped(tls.CosineAnnealingLR(_opt(0.1), 5000, 1e-6), 5000)
    closed = _closed(tls.CosineAnnealingLR(_opt(0.1), 5000, 1e-6), 5000)
    ours = build_schedule(spec)
    drift = max(abs(a - b) / b for a, b in zip(stepped, closed))
    ours_err = max(abs(ours.lr_at(s) - c) / c for s, c in enumerate(closed))
    assert ours_err <= REL
    # the chainable form still agrees to ~1e-9 here, but it is the one that moves
    assert drift < 1e-6 and drift >= ours_err


# --- Hugging Face -----------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
from transformers import optimization as hf  # noqa: E402

HF_CASES = [
    ({"name": "warmup_linear", "lr": 5e-5, "warmup_steps": 40, "total_steps": 300},
     lambda o: hf.get_linear_schedule_with_warmup(o, 40, 300)),
    ({"name": "warmup_cosine", "lr": 6e-4, "warmup_steps": 20, "total_steps": 350},
     lambda o: hf.get_cosine_schedule_with_warmup(o, 20, 350)),
    ({"name": "warmup_cosine", "lr": 6e-4, "warmup_steps": 20, "total_steps": 350, "num_cycles": 2.0},
     lambda o: hf.get_cosine_schedule_with_warmup(o, 20, 350, num_cycles=2.0)),
    ({"name": "warmup_cosine", "lr": 6e-4, "warmup_steps": 20, "total_steps": 380, "min_lr": 6e-5},
     lambda o: hf.get_cosine_with_min_lr_schedule_with_warmup(o, 20, 380, min_lr=6e-5)),
    ({"name": "warmup_constant", "lr": 1e-3, "warmup_steps": 100},
     lambda o: hf.get_constant_schedule_with_warmup(o, 100)),
    ({"name": "warmup_polynomial", "lr": 1e-3, "warmup_steps": 30, "total_steps": 300, "power": 2.0},
     lambda o: hf.get_polynomial_decay_schedule_with_warmup(o, 30, 300, power=2.0)),
    ({"name": "warmup_inverse_sqrt", "lr": 1e-3, "warmup_steps": 50},
     lambda o: hf.get_inverse_sqrt_schedule(o, 50)),
    ({"name": "warmup_inverse_sqrt", "lr": 1e-3, "warmup_steps": 10, "timescale": 40},
     lambda o: hf.get_inverse_sqrt_schedule(o, 10, timescale=40)),
    # the instruction-tuning recipe: 3% warmup, cosine, expressed by ratio
    ({"name": "warmup_cosine", "lr": 2e-5, "warmup_ratio": 0.03, "total_steps": 390},
     lambda o: hf.get_cosine_schedule_with_warmup(o, math.ceil(0.03 * 390), 390)),
    ({"name": "linear", "lr": 2e-5, "warmup_steps": 0, "total_steps": 390},
     lambda o: hf.get_linear_schedule_with_warmup(o, 0, 390)),
]


@pytest.mark.parametrize("spec,make", HF_CASES, ids=lambda c: c["name"] if isinstance(c, dict) else "")
def test_matches_hugging_face(spec, make):
    _assert_same(spec, _stepped(make(_opt(spec["lr"], adam=True))))


# --- declarations ------------------------------------------------------------------------------


def test_every_schedule_round_trips_through_its_spec():
    specs = [c[0] for c in CLOSED_FORM_CASES + NONCHAINABLE_CASES + HF_CASES]
    specs.append({"name": "inverse_time", "lr": 0.1, "decay_steps": 10, "decay_rate": 0.5, "staircase": True})
    specs.append({"name": "step", "lr": 0.1, "step_size": 30, "interval": "epoch", "steps_per_epoch": 5005})
    assert {build_schedule(s).name for s in specs} >= set(SCHEDULES)
    for spec in specs:
        a = build_schedule(spec)
        b = build_schedule(a.to_spec())
        assert [a.lr_at(s) for s in range(0, 600, 7)] == [b.lr_at(s) for s in range(0, 600, 7)]


def test_inverse_time_is_keras_formula():
    s = build_schedule({"name": "inverse_time", "lr": 0.1, "decay_steps": 10, "decay_rate": 0.5})
    assert s.lr_at(0) == 0.1 and math.isclose(s.lr_at(20), 0.1 / (1 + 0.5 * 2))
    st = build_schedule({"name": "inverse_time", "lr": 0.1, "decay_steps": 10, "decay_rate": 0.5, "staircase": True})
    assert st.lr_at(19) == st.lr_at(10) == 0.1 / 1.5


@pytest.mark.parametrize("spec,msg", [
    ({"lr": 0.1}, "needs a 'name'"),
    ({"name": "cosnie", "lr": 0.1}, "unknown schedule 'cosnie'"),
    ({"name": "cosine", "lr": 0.1}, "missing parameter 'total_steps'"),
    ({"name": "cosine", "lr": "0.1", "total_steps": 10}, "'lr' must be a number"),
    ({"name": "cosine", "lr": float("nan"), "total_steps": 10}, "must be finite"),
    ({"name": "cosine", "lr": 0.1, "total_steps": 0}, "must be positive"),
    ({"name": "step", "lr": 0.1, "step_size": 2.5}, "non-negative integer"),
    ({"name": "step", "lr": -0.1, "step_size": 2}, ">= 0"),
    ({"name": "multistep", "lr": 0.1, "milestones": [3, "x"]}, "list of non-negative integers"),
    ({"name": "cyclic", "base_lr": 0.1, "max_lr": 1.0, "step_size_up": 4, "mode": "sine"}, "mode must be"),
    ({"name": "warmup_cosine", "lr": 0.1, "total_steps": 10, "warmup_steps": 2, "warmup_ratio": 0.1}, "not both"),
    ({"name": "cosine", "lr": 0.1, "total_steps": 10, "T_max": 4}, "unknown parameter(s) T_max"),
    ({"name": "step", "lr": 0.1, "step_size": 3, "interval": "epoch"}, "needs steps_per_epoch"),
    ("cosine", "must be an object"),
])
def test_bad_declarations_say_what_is_wrong(spec, msg):
    with pytest.raises(ValueError, match=None) as e:
        build_schedule(spec)
    assert msg in str(e.value)
