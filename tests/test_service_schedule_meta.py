"""A schedule declared with PUT /v1/runs/{id} never breaks the run's ingest: schedules whose exact
LR leaves the float range are accepted and POSTs of the run answer 200 at any step, on both
stores; a declaration that cannot be evaluated is refused at PUT with a 422 that says why, and the
stored metadata stays as it was."""

from __future__ import annotations

import pytest

from service_helpers import client, post_records

MAX_STEP = 2**63 - 1

# the schedules that made every later POST of their run a 500
GROWING = [
    ("tri2", {"name": "cyclic", "params": {"base_lr": 1e-4, "max_lr": 1e-2, "step_size_up": 100,
                                           "mode": "triangular2"}}, 204_800),
    ("exp2", {"name": "exponential", "params": {"lr": 1e-3, "gamma": 2.0}}, 1_024),
    ("exprange", {"name": "cyclic", "params": {"base_lr": 1e-4, "max_lr": 1e-2, "step_size_up": 100,
                                               "mode": "exp_range", "gamma": 1.5}}, 4_000),
]


@pytest.mark.parametrize("run_id, schedule, from_step", GROWING, ids=[g[0] for g in GROWING])
def test_growing_schedule_does_not_break_ingest(service_on_each_store, run_id, schedule, from_step):
    c = client(service_on_each_store)
    assert c.put(f"/v1/runs/{run_id}", json={"lr_schedule": schedule}).status_code == 200
    steps = [0, 1, from_step - 1, from_step, from_step + 1, from_step * 10, 2**40]
    for s in steps:
        # an LR that is not the declared one, so the monitor diagnoses (and evaluates) at every step
        r = post_records(c, run_id, [{"step": s, "loss": 1.0, "lr": 1e-3 * (1 + s % 7)}])
        assert r.status_code == 200, (s, r.text)
    assert c.get(f"/v1/runs/{run_id}").json()["last_step"] == steps[-1]


def test_the_largest_step_is_evaluated_too(service_factory):
    c = client(service_factory().url)
    assert c.put("/v1/runs/big", json={"lr_schedule": {"name": "exponential", "lr": 1e-3, "gamma": 2.0}}).status_code == 200
    for s in (2**53, MAX_STEP - 1, MAX_STEP):
        r = post_records(c, "big", [{"step": s, "loss": 1.0, "lr": 5e-4}])
        assert r.status_code == 200, (s, r.text)


@pytest.mark.parametrize("schedule, word", [
    ({"name": "no-such-schedule"}, "unknown schedule"),
    ({"name": "cosine", "params": {"lr": 1e-3}}, "total_steps"),
    ({"name": "one_cycle", "params": {"max_lr": 0.1, "total_steps": 100, "div_factor": 0}}, "div_factor"),
    ({"name": "cosine", "params": {"lr": 1e-3, "total_steps": 2**64}}, "2^63-1"),
])
def test_unevaluable_schedule_is_a_422_and_changes_nothing(service_proc, schedule, word):
    c = client(service_proc)
    run_id = "sched-bad"
    good = {"task": "t", "lr_schedule": {"name": "constant", "lr": 1e-3}}
    assert c.put(f"/v1/runs/{run_id}", json=good).status_code == 200
    r = c.put(f"/v1/runs/{run_id}", json={"task": "other", "lr_schedule": schedule})
    assert r.status_code == 422, r.text
    assert word in r.text
    assert c.get(f"/v1/runs/{run_id}").json()["meta"] == {"task": "t", "lr_schedule": {"name": "constant", "lr": 1e-3}}
