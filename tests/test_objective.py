"""A run that declares its loss is not minimised to a floor (a GAN's, an RL agent's) gets only the
detectors whose facts hold whatever the loss means: on real GAN and RL logs of the tune part of the
corpus (bench/real/, provenance in bench/real/SOURCES.md; the holdout part is never read here),
through the engine, ``losswatch replay``, the client and the service."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from detector_helpers import in_batches, one_at_a_time, raised, tune_records
from losswatch.client import Monitor
from losswatch.detectors import Engine
from losswatch.detectors.objective import OBJECTIVES, objective_of
from losswatch.detectors.types import Record
from service_helpers import client, post_records

WAVEGAN = "histories/0111yoyo__gan1202__training-log-csv.csv"  # generator loss 0.7 -> 1-6.6, healthy
PPO = "histories/morikatron__gail_ppo__sample-result-human-progress-csv.csv"  # GAIL PPO loss, healthy
DQN = "histories/tobiasludwig02__rlflappybird__logs-dqn-mlp-std-2mio-progress-csv.csv"  # DQN loss, healthy

#: the detectors that run whatever the loss means
FACTS = {"nan", "grad_explosion", "grad_vanishing", "lr_anomaly", "schedule_monitor"}


def _detectors(eng: Engine) -> set[str]:
    return {d.name for d in eng._detectors}


@pytest.mark.parametrize("objective, path", [("adversarial", WAVEGAN), ("reinforcement", PPO),
                                             ("reinforcement", DQN)])
def test_a_declared_gan_or_rl_loss_that_rises_is_not_told_to_change_its_lr(objective, path):
    recs = tune_records(path)
    meta = {"objective": objective}
    alerts = one_at_a_time(recs, meta=meta)[1]
    assert [a for a in raised(alerts, min_severity="warning")] == []
    # both update paths give the same (no) alerts
    assert [(a.id, a.event) for a in in_batches(recs, 97, meta=meta)[1]] == [(a.id, a.event) for a in alerts]


def test_the_facts_still_fire_for_a_declared_objective():
    eng = Engine("g", {"objective": "adversarial"})
    assert _detectors(eng) == FACTS - {"schedule_monitor"}
    out = []
    for s in range(60):  # a GAN loss swinging up and down, a calm gradient, then one 1000x its size
        out += eng.update(Record(s, 0.7 + 2.0 * (s % 5 == 0) + s / 30, grad_norm=1000.0 if s == 50 else 1.0 + s % 3))
    out += eng.update(Record(60, math.nan, grad_norm=1.0))
    kinds = {a.kind for a in raised(out, min_severity="warning")}
    assert kinds == {"grad_explosion", "nan"}
    # a declared schedule is a fact about the LR: its monitor runs too
    eng = Engine("g", {"objective": "reinforcement", "lr_schedule": {"name": "constant", "lr": 1e-3}})
    assert "schedule_monitor" in _detectors(eng)


def test_changing_the_objective_mid_run_takes_detectors_off_and_adds_them_fresh():
    climb = [Record(s, 1.0 + 0.5 * s) for s in range(12)]
    eng = Engine("r", {"objective": "adversarial"})
    assert raised([a for r in climb for a in eng.update(r)], "divergence") == []
    # a saved state loads with the same detectors: none of the excluded ones comes back
    eng = Engine.from_bytes(eng.to_bytes())
    assert _detectors(eng) == FACTS - {"schedule_monitor"}
    eng.set_meta({"objective": "minimised"})
    assert "divergence" in _detectors(eng)
    # the divergence detector starts with no episode of its own, but the run's statistics (the
    # shared features) kept the whole climb: on the next record it tells the run-away
    out = eng.update(Record(12, 7.0))
    assert [(a.kind, a.severity) for a in raised(out, min_severity="warning")] == [("divergence", "critical")]
    eng.set_meta({"objective": "reinforcement", "task": "x"})
    assert _detectors(eng) == FACTS - {"schedule_monitor"}
    # metadata without the key is the default: every detector
    eng.set_meta({"task": "x"})
    assert {"divergence", "plateau", "overfitting", "dead"} <= _detectors(eng)


@pytest.mark.parametrize("bad", ["gan", 1, ["adversarial"], "Adversarial"])
def test_an_unknown_objective_is_a_clear_error_at_every_door(bad, tmp_path):
    with pytest.raises(ValueError, match="unknown objective .*expected one of " + ", ".join(OBJECTIVES)):
        objective_of({"objective": bad})
    # the engine keeps monitoring (bad metadata must not stop it), reads the loss as minimised
    # and says so
    with pytest.warns(UserWarning, match="the loss is read as minimised"):
        eng = Engine("r", {"objective": bad})
    assert "divergence" in _detectors(eng)
    with pytest.raises(ValueError, match="unknown objective"):
        Monitor(run_id="r", url=None, meta={"objective": bad})
    p = tmp_path / "r.csv"
    p.write_text("step,loss\n0,1.0\n1,0.9\n")
    res = subprocess.run([sys.executable, "-m", "losswatch.service.cli", "replay", str(p), "--meta",
                          json.dumps({"objective": bad})],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("losswatch replay: --meta: unknown objective")


def test_replay_with_a_declared_objective(tmp_path):
    p = tmp_path / "gan.csv"
    p.write_text("step,loss\n" + "".join(f"{r.step},{r.loss}\n" for r in tune_records(WAVEGAN)))
    cmd = [sys.executable, "-m", "losswatch.service.cli", "replay", str(p), "--format", "jsonl"]
    declared = subprocess.run(cmd + ["--meta", '{"objective": "adversarial"}'], capture_output=True, text=True,
                              timeout=120)
    assert declared.returncode == 0 and declared.stdout.strip() == ""
    assert "final health ok" in declared.stderr


def test_the_service_takes_the_objective_and_refuses_an_unknown_one(service_proc):
    c = client(service_proc)
    assert c.put("/v1/runs/gan", json={"objective": "adversarial"}).status_code == 200
    recs = tune_records(WAVEGAN)
    r = post_records(c, "gan", [{"step": x.step, "loss": x.loss} for x in recs])
    assert r.status_code == 200, r.text
    assert r.json()["recommendation"] is None
    assert [a for a in c.get("/v1/runs/gan/alerts").json()["alerts"] if a["severity"] != "info"] == []
    r = c.put("/v1/runs/gan", json={"objective": "gan", "task": "t"})
    assert r.status_code == 422 and "objective" in r.text
    assert c.get("/v1/runs/gan").json()["meta"] == {"objective": "adversarial"}
