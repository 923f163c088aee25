"""The compiled recursions (detectors/_recursions.c) against the pure-Python loops they twin
(features._loss_core, features._gn_core): the same floats to the bit, on random and adversarial
sequences and from every kind of starting state. The one-record path runs the Python loops and
the batch path the compiled ones, so any difference would split the two paths' alerts."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from losswatch.detectors import Engine, Record, features


def test_the_compiled_twin_is_built():
    # the test command installs the package with a C compiler: a missing build is a regression
    assert features._recursions is not None, "detectors/_recursions.c was not built (pip install -e .)"


def _bits(a) -> list[int]:
    return np.asarray(a, dtype=np.float64).view(np.int64).tolist()


def _same_state(a: dict, b: dict) -> None:
    for k in ("fast", "slow", "sd", "nsd", "trend", "pbest", "alt", "amp", "dlast", "mu", "var"):
        if k in a:
            assert _bits([a[k]]) == _bits([b[k]]), k
    for k in ("pstep", "pnl"):
        assert a.get(k) == b.get(k), k


def _fold_both(state: dict, xs: list[float], steps: list[int]) -> None:
    p = dict(features.DEFAULT_PARAMS)
    py, c = dict(state), dict(state)
    want = features._loss_core(py, p, xs, steps)
    got = features._loss_fold(c, p, np.array(xs, dtype=np.float64), np.array(steps, dtype=np.int64))
    for name, _ in features._CORE_COLS:
        assert want[name].dtype == got[name].dtype, name
        if want[name].dtype == np.int64:
            assert want[name].tolist() == got[name].tolist(), name
        else:
            assert _bits(want[name]) == _bits(got[name]), name
    _same_state(py, c)


def _gn_both(state: dict, gs: list[float]) -> None:
    p = dict(features.DEFAULT_PARAMS)
    py, c = dict(state), dict(state)
    want = features._gn_core(py, p, gs)
    got = features._gn_fold(c, p, np.array(gs, dtype=np.float64))
    for w, g in zip(want, got):
        assert _bits(w) == _bits(g)
    _same_state(py, c)


def _losses(rng: random.Random, n: int) -> list[float]:
    """Losses of every shape the statistics meet: descents, plateaus, flat copies, spikes, blow-ups
    to the clip, negative losses, signed zeros, tiny values."""
    out, x = [], rng.choice([2.3, 0.01, -5.0, 1e-12, 1e6])
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            x = rng.choice([features.CLIP, -features.CLIP, 0.0, -0.0, 5e-324, 1e-300])
        elif r < 0.15:
            x = x * rng.choice([10.0, 0.1, 1e50])
        elif r < 0.3:
            pass  # the same value again
        else:
            x = x * (1 - 0.01 * rng.random()) + rng.gauss(0, abs(x) * 0.05 + 1e-9)
        out.append(min(max(x, -features.CLIP), features.CLIP))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_loss_fold_equals_the_python_loop(seed):
    rng = random.Random(seed)
    xs = _losses(rng, rng.randrange(0, 400))
    steps = sorted(rng.sample(range(0, 2**62), len(xs)))
    state = features.initial_state()
    # fold part of it first, so the compiled loop also starts mid-run
    cut = rng.randrange(0, len(xs) + 1)
    features._loss_core(state, dict(features.DEFAULT_PARAMS), xs[:cut], steps[:cut])
    state.update(nl=cut, lprev=xs[cut - 1] if cut else math.nan, lp2=xs[cut - 2] if cut > 1 else math.nan)
    _fold_both(state, xs[cut:], steps[cut:])


def test_loss_fold_reads_old_states_as_the_python_loop_does():
    state = features.initial_state()
    xs = [2.0, 1.9, 1.95, 1.7]
    features._loss_core(state, dict(features.DEFAULT_PARAMS), xs, [0, 1, 2, 3])
    state.update(nl=4, lprev=1.7, lp2=1.95, nsd=math.nan)  # saved before nsd existed
    del state["pnl"]  # ... and before pnl did: loaded as the Engine loads a saved state
    _fold_both({**features.initial_state(), **state}, [1.6, 1.65, 1.4, 1.41], [4, 5, 6, 7])


@given(st.lists(st.floats(min_value=-features.CLIP, max_value=features.CLIP, allow_nan=False), max_size=60))
@settings(max_examples=200, deadline=None)
def test_loss_fold_equals_the_python_loop_on_any_floats(xs):
    _fold_both(features.initial_state(), xs, list(range(len(xs))))


@given(st.lists(st.floats(min_value=0.0, max_value=1e308, allow_nan=False, allow_infinity=False), max_size=60))
@settings(max_examples=200, deadline=None)
def test_gn_fold_equals_the_python_loop_on_any_grad_norms(gs):
    _gn_both(features.initial_state(), gs)


def test_gn_fold_from_mid_run_and_zero_grad_norms():
    rng = random.Random(7)
    state = features.initial_state()
    gs = [abs(rng.gauss(1, 0.3)) for _ in range(200)] + [0.0, 1e-40, 1e200, 1e200, 3.0] + [1.0] * 50
    features._gn_core(state, dict(features.DEFAULT_PARAMS), gs[:77])
    state["ng"] = 77
    _gn_both(state, gs[77:])


def test_the_batch_path_gives_the_one_record_paths_alerts_through_the_compiled_loops():
    # a run that blows up: the statistics reach every branch (re-anchors, caps, plateau bests)
    rng = random.Random(3)
    loss = [2.5 * 0.995**i + rng.gauss(0, 0.02) for i in range(600)] + [1.0 * 1.05**i for i in range(100)]
    gn = [1.0 + 0.1 * rng.random() for _ in range(600)] + [1.0 * 1.1**i for i in range(100)]
    steps = list(range(0, 7000, 10))
    one, batch = Engine(run_id="one"), Engine(run_id="batch")
    a: list = []
    for s, x, g in zip(steps, loss, gn):
        a += one.update(Record(step=s, loss=x, grad_norm=g, lr=1e-3))
    b = batch.update_batch([Record(step=s, loss=x, grad_norm=g, lr=1e-3) for s, x, g in zip(steps, loss, gn)])
    assert features._recursions is not None
    assert a and [(x.kind, x.severity, x.step, x.message) for x in a] == [(x.kind, x.severity, x.step, x.message) for x in b]


def test_without_the_compiled_module_the_batch_path_runs_the_python_loops(monkeypatch):
    rng = random.Random(5)
    recs = [Record(step=10 * i, loss=2.0 * 0.99**i + rng.gauss(0, 0.01), grad_norm=1 + rng.random(), lr=1e-3)
            for i in range(300)] + [Record(step=3000 + 10 * i, loss=0.2 * 1.1**i, grad_norm=5.0 * 1.2**i, lr=1e-3)
                                   for i in range(60)]
    compiled = Engine(run_id="c").update_batch(recs)
    monkeypatch.setattr(features, "_recursions", None)
    python = Engine(run_id="p").update_batch(recs)
    assert compiled and [(a.kind, a.step, a.message) for a in compiled] == [(a.kind, a.step, a.message) for a in python]
