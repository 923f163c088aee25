"""Every schedule declaration build_schedule accepts evaluates at every step a record can carry
(0 .. 2^63-1) to a finite LR >= 0, and the schedule monitor never raises on it; a declaration
that cannot be evaluated is refused with a ValueError naming what is wrong (the API's 422)."""

from __future__ import annotations

import dataclasses
import math
import sys

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from losswatch.detectors.schedule_monitor import ScheduleMonitor
from losswatch.detectors.schedules import SCHEDULES, build_schedule

MAX_STEP = 2**63 - 1
FLOAT_MAX = sys.float_info.max
EXTREME_STEPS = (0, 1, 2, 1023, 1024, 204_800, 2**53, 2**53 + 1, MAX_STEP - 1, MAX_STEP)

_floats = st.one_of(
    st.sampled_from([0.0, 5e-324, 1e-300, 1e-7, 0.1, 0.5, 0.9999999, 1.0, 1.0000001, 2.0, 10.0, 1e6,
                     1e300, FLOAT_MAX]),
    st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
)
_ints = st.one_of(
    st.sampled_from([0, 1, 2, 3, 100, 2**31, 2**53, 2**53 + 1, MAX_STEP]),
    st.integers(min_value=0, max_value=MAX_STEP),
)
#: values a declaration is refused for (the refusal must be a ValueError, nothing else)
_value = st.sampled_from([True, None, "x", -1, -1.5, 2**64, 10**400, 10**5000])


@st.composite
def specs(draw):
    """A declaration in the shape clients send: a known name, a random subset of its parameters
    with values from across the JSON number range (and some of the wrong type)."""
    name = draw(st.sampled_from(sorted(SCHEDULES)))
    cls = SCHEDULES[name]
    fields = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    spec: dict = {"name": name}
    for f in fields:
        if f not in cls.required and draw(st.booleans()):
            continue
        if f == "mode":
            spec[f] = draw(st.sampled_from(["triangular", "triangular2", "exp_range"]))
        elif f == "anneal_strategy":
            spec[f] = draw(st.sampled_from(["cos", "linear"]))
        elif f in ("staircase", "three_phase"):
            spec[f] = draw(st.booleans())
        elif f == "milestones":
            spec[f] = draw(st.lists(_ints, max_size=6))
        else:
            spec[f] = draw(_value if draw(st.integers(0, 15)) == 0 else st.one_of(_floats, _ints))
    if draw(st.integers(0, 4)) == 0:
        spec["interval"] = "epoch"
        spec["steps_per_epoch"] = draw(_ints)
    return spec


def _accepted(spec):
    try:
        return build_schedule(spec)
    except ValueError:
        return None  # refused with a message: what the API answers 422 with


def _check(sched, step: int) -> None:
    v = sched.lr_at(step)
    assert type(v) is float and math.isfinite(v) and v >= 0.0, (sched, step, v)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), step=st.integers(0, MAX_STEP))
# found by this test: a zero LR times a warm-up factor that overflowed was NaN
@example(spec={"name": "warmup_polynomial", "lr": 0.0, "total_steps": 2147483648, "warmup_steps": 204801,
               "min_lr": 0.0, "start_factor": 8.777798510069902e+302, "power": 0.0, "end_lr": 1e-07}, step=204800)
def test_accepted_schedules_evaluate_at_every_step(spec, step):
    sched = _accepted(spec)
    assume(sched is not None)
    for s in (*EXTREME_STEPS, step):
        _check(sched, s)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), step=st.integers(0, MAX_STEP - 10),
       lr=st.sampled_from([0.0, 5e-324, 1e-300, 1e-3, 1.0, 1e300, FLOAT_MAX]))
def test_schedule_monitor_never_raises(spec, step, lr):
    m = ScheduleMonitor(schedule=spec, patience=1, recover=1)
    for s in (0, 1, step, step + 1, MAX_STEP - 1, MAX_STEP):
        m.observe(s, lr)
        m.observe(s, lr * 0.5)


@pytest.mark.parametrize("spec, step", [
    ({"name": "exponential", "lr": 0.1, "gamma": 2.0}, 1024),
    ({"name": "cyclic", "base_lr": 1e-4, "max_lr": 1e-2, "step_size_up": 100, "mode": "triangular2"}, 204_800),
    ({"name": "cyclic", "base_lr": 1e-4, "max_lr": 1e-2, "step_size_up": 100, "mode": "exp_range",
      "gamma": 1.5}, 10_000),
    ({"name": "inverse_time", "lr": 0.1, "decay_rate": 1.0, "power": 100.0}, 2**53),
    ({"name": "step", "lr": 0.1, "step_size": 1, "gamma": 3.0}, MAX_STEP),
    ({"name": "multistep", "lr": 0.1, "milestones": list(range(2000)), "gamma": 2.0}, 5000),
])
def test_growing_schedules_saturate_instead_of_raising(spec, step):
    """The reported failures: gamma > 1 and triangular2's halving overflowed Python floats."""
    _check(build_schedule(spec), step)


@pytest.mark.parametrize("spec, words", [
    ({"name": "one_cycle", "max_lr": 0.1, "total_steps": 100, "div_factor": 0}, "div_factor"),
    ({"name": "one_cycle", "max_lr": 0.1, "total_steps": 100, "final_div_factor": 0}, "final_div_factor"),
    ({"name": "cosine", "lr": 0.1, "total_steps": 10**400}, "total_steps"),
    ({"name": "constant", "lr": 10**400}, "lr"),
])
def test_impossible_declarations_are_refused_with_a_reason(spec, words):
    with pytest.raises(ValueError, match=words):
        build_schedule(spec)


def test_small_values_keep_their_exact_arithmetic():
    """Saturation only changes what used to raise: ordinary values are bit-for-bit the same."""
    s = build_schedule({"name": "cyclic", "base_lr": 1e-4, "max_lr": 1e-2, "step_size_up": 100, "mode": "triangular2"})
    up, total = 100.0, 200.0
    for step in (0, 50, 150, 250, 999, 4321):
        cycle = math.floor(1 + step / total)
        x = 1.0 + step / total - cycle
        scale = x / (up / total) if x <= up / total else (x - 1) / (up / total - 1)
        assert s.lr_at(step) == 1e-4 + (1e-2 - 1e-4) * scale * (1 / (2.0 ** (cycle - 1)))
    e = build_schedule({"name": "exponential", "lr": 0.1, "gamma": 0.99})
    assert e.lr_at(500) == 0.1 * 0.99**500
