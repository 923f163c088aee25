"""`losswatch tune`: real training trials (digits MLP) in local processes and on a small local
Ray cluster; lost trials stopped by the detectors; results streamed and recorded."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import httpx
import pytest

from losswatch.service.lr import tuner
from losswatch.service.lr.policy_db import PolicyDB

FN = "losswatch.service.lr.examples:train_digits"
COSINE = {"name": "cosine", "total_steps": 60}


def test_search_spaces():
    g = tuner.grid_trials([COSINE, {"name": "one_cycle", "total_steps": 60}, {"name": "cyclic", "step_size_up": 10}],
                          [0.1, 1.0], seeds=[0, 1])
    assert len(g) == 12 and len({t.trial_id for t in g}) == 12
    assert g[0].policy == {"name": "cosine", "lr": 0.1, "total_steps": 60, "min_lr": 0.0}
    oc = [t.policy for t in g if t.policy["name"] == "one_cycle"]
    assert {p["max_lr"] for p in oc} == {0.1, 1.0}
    cy = [t.policy for t in g if t.policy["name"] == "cyclic"]
    assert all(math.isclose(p["base_lr"], p["max_lr"] / 10) for p in cy)
    r1 = tuner.random_trials([COSINE], 50, 1e-4, 1.0, seed=3)
    r2 = tuner.random_trials([COSINE], 50, 1e-4, 1.0, seed=3)
    lrs = [t.policy["lr"] for t in r1]
    assert lrs == [t.policy["lr"] for t in r2] and all(1e-4 <= x <= 1.0 for x in lrs)
    assert min(lrs) < 1e-3 and max(lrs) > 1e-1  # log-uniform: both ends reached
    with pytest.raises(ValueError, match="missing parameter 'total_steps'"):
        tuner.grid_trials([{"name": "cosine"}], [0.1])


def test_early_stop_saves_steps_and_keeps_the_best_trial():
    trials = tuner.grid_trials([COSINE], [0.03, 0.3, 30.0])
    stopped = tuner.run_local(FN, trials, steps=60, workers=1)
    full = tuner.run_local(FN, trials, steps=60, workers=1, early_stop=False)
    by = {r.trial_id: r for r in stopped}
    lost = by["t0-lr30-s0"]
    assert lost.stopped_early and lost.steps_run < 30 and lost.reason.startswith("divergence")
    assert not by["t0-lr0.3-s0"].stopped_early and by["t0-lr0.3-s0"].steps_run == 60
    assert all(not r.stopped_early and r.steps_run == 60 for r in full)
    assert tuner.best_result(stopped).trial_id == tuner.best_result(full).trial_id == "t0-lr0.3-s0"
    # the trials that ran to the end are bit-identical with and without early stopping
    assert by["t0-lr0.3-s0"].final_loss == next(r for r in full if r.trial_id == "t0-lr0.3-s0").final_loss
    s = tuner.summary(stopped)
    assert s["steps_run"] < s["steps_budget"] and s["steps_saved_fraction"] > 0.2


def test_cli_local_processes_stream_and_record(service_proc, tmp_path):
    db = tmp_path / "p.sqlite"
    task = {"model_family": "mlp-64", "dataset": "digits", "optimizer": "sgd", "batch_size": 32}
    r = subprocess.run(
        [sys.executable, "-m", "losswatch.service.cli", "tune", FN, "--lrs", "0.3,30", "--policy", json.dumps(COSINE),
         "--steps", "60", "--workers", "2", "--url", service_proc, "--run-prefix", "cli", "--record", json.dumps(task),
         "--db", str(db), "--format", "json"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["summary"]["best"]["trial_id"] == "t0-lr0.3-s0" and out["summary"]["recorded"] == 2
    entries = PolicyDB(str(db)).list(**task)
    assert sorted((e.policy["lr"], e.diverged, e.source) for e in entries) == [(0.3, False, "tune"), (30.0, True, "tune")]
    assert PolicyDB(str(db)).best(**task).policy["lr"] == 0.3
    # every trial streamed to the service as its own run, with its schedule in the metadata
    with httpx.Client(base_url=service_proc, timeout=10) as c:
        lost = c.get("/v1/runs/cli-t0-lr30-s0").json()
        assert lost["meta"]["lr_schedule"]["lr"] == 30.0
        steps = c.get("/v1/runs/cli-t0-lr30-s0/steps").json()
        n_lost = next(t for t in out["trials"] if t["trial_id"] == "t0-lr30-s0")["steps_run"]
        assert steps["total"] == n_lost and steps["series"]["step"] == list(range(n_lost))
        alerts = c.get("/v1/runs/cli-t0-lr30-s0/alerts").json()
        kinds = {a["kind"] for a in (alerts["alerts"] if isinstance(alerts, dict) else alerts)}
        assert "divergence" in kinds
        assert c.get("/v1/runs/cli-t0-lr0.3-s0").json()["last_step"] == 59


def test_cli_bad_arguments(tmp_path):
    def cli(*a):
        return subprocess.run([sys.executable, "-m", "losswatch.service.cli", "tune", *a],
                              capture_output=True, text=True, timeout=60)
    r = cli("no_such_module:train", "--lrs", "0.1")
    assert r.returncode == 2 and "cannot import no_such_module:train" in r.stderr
    r = cli(FN, "--lrs", "0.1", "--samples", "3")
    assert r.returncode == 2 and "either --lrs" in r.stderr
    r = cli(FN, "--lrs", "0.1,-1")
    assert r.returncode == 2 and "positive" in r.stderr
    r = cli(FN, "--lrs", "0.1", "--policy", '{"name": "cosine"')
    assert r.returncode == 2 and "not JSON" in r.stderr


def test_ray_tune_backend(tmp_path):
    pytest.importorskip("ray")
    trials = tuner.grid_trials([COSINE], [0.3, 30.0])
    res = tuner.run_ray(FN, trials, steps=60, workers=2, storage_path=str(tmp_path / "ray"))
    by = {r.trial_id: r for r in res}
    assert by["t0-lr30-s0"].stopped_early and by["t0-lr30-s0"].steps_run < 30
    assert by["t0-lr0.3-s0"].steps_run == 60 and by["t0-lr0.3-s0"].final_loss < 1.0
    # same numbers as a local run of the same trials (deterministic training)
    local = {r.trial_id: r for r in tuner.run_local(FN, trials, steps=60, workers=1)}
    assert by["t0-lr0.3-s0"].final_loss == local["t0-lr0.3-s0"].final_loss
    # the losses come back through Ray's result frames as they were (None travels as a flag)
    assert {t: (r.final_loss, r.best_loss) for t, r in by.items()} == \
        {t: (r.final_loss, r.best_loss) for t, r in local.items()}
    assert by["t0-lr30-s0"].steps_run == local["t0-lr30-s0"].steps_run
