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

#: the built-in detectors that run whatever the loss means, in the engine's order
FACTS = ["nan", "grad_explosion", "lr_anomaly"]


def _detectors(eng: Engine) -> list[str]:
    return [d.name for d in eng._detectors]


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
    assert _detectors(eng) == FACTS
    out = []
    for s in range(60):  # a GAN loss swinging up and down, a calm gradient, then one 1000x its size
        out += eng.update(Record(s, 0.7 + 2.0 * (s % 5 == 0) + s / 30, grad_norm=1000.0 if s == 50 else 1.0 + s % 3))
    out += eng.update(Record(60, math.nan, grad_norm=1.0))
    kinds = {a.kind for a in raised(out, min_severity="warning")}
    assert kinds == {"grad_explosion", "nan"}
    # a declared schedule is a fact about the LR: its monitor runs too
    eng = Engine("g", {"objective": "reinforcement", "lr_schedule": {"name": "constant", "lr": 1e-3}})
    assert _detectors(eng) == FACTS + ["schedule_monitor"]


def test_changing_the_objective_mid_run_takes_detectors_off_and_adds_them_fresh():
    climb = [Record(s, 1.0 + 0.5 * s) for s in range(12)]
    sgd = {"optimizer": "sgd", "momentum": 0.9}
    eng = Engine("r", {"objective": "adversarial", **sgd})
    assert raised([a for r in climb for a in eng.update(r)], "divergence") == []
    # a saved state loads with the same detectors: none of the excluded ones comes back
    eng = Engine.from_bytes(eng.to_bytes())
    assert _detectors(eng) == FACTS
    assert eng.set_meta({"objective": "minimised", **sgd}) == []
    # every detector a fresh engine of that metadata has, the one the optimizer asks for too, in order
    assert _detectors(eng) == _detectors(Engine("r", sgd))
    # the divergence detector starts with no episode of its own, but the run's statistics (the
    # shared features) kept the whole climb: on the next record it tells the run-away
    out = eng.update(Record(12, 7.0))
    assert [(a.kind, a.severity) for a in raised(out, min_severity="warning")] == [("divergence", "critical")]
    # declared again: the open alerts of the detectors taken off come back resolved at the last step
    gone = eng.set_meta({"objective": "reinforcement", "task": "x"})
    assert {(a.kind, a.event, a.resolved_step) for a in gone} >= {("divergence", "resolved", 12)}
    assert eng.active_alerts == [] and eng.health == "ok" and _detectors(eng) == FACTS
    # metadata without the key is the default: every built-in detector
    eng.set_meta({"task": "x"})
    assert _detectors(eng) == _detectors(Engine("r"))


def test_a_state_saved_before_the_objective_had_a_meaning_gets_its_parameters_at_the_next_change():
    # the key was free-form metadata before: such a state holds every detector, nan with its
    # minimised parameters; new metadata takes off what the objective excludes and retunes nan
    eng = Engine("r")
    for s in range(5):
        eng.update(Record(s, 1.0))
    eng.meta = {"objective": "adversarial"}  # as such a state stored it
    eng = Engine.from_bytes(eng.to_bytes())
    assert "divergence" in _detectors(eng)
    eng.set_meta({"objective": "adversarial", "status": "finished"})
    assert _detectors(eng) == FACTS
    assert [d.params["ran_away"] for d in eng._detectors if d.name == "nan"] == [math.inf]


def test_between_two_declared_objectives_an_open_alert_stays_open():
    eng = Engine("r", {"objective": "adversarial"})
    out = []
    for s in range(30):
        out += eng.update(Record(s, 1.0 + (s % 4) * 0.3, grad_norm=500.0 if s >= 20 else 1.0 + s % 3))
    (opened,) = raised(out, "grad_explosion")
    assert eng.set_meta({"objective": "reinforcement"}) == []
    assert [a.id for a in eng.active_alerts] == [opened.id]


def test_a_nan_after_a_declared_rise_rolls_back_to_the_last_finite_step():
    # a GAN loss that rose 0.7 -> 4.8 by design: its best is no healthier state to return to
    recs = [Record(s, 0.7 + 0.014 * s) for s in range(300)] + [Record(300, math.nan)]
    alerts = one_at_a_time(recs, meta={"objective": "adversarial"})[1]
    (nan,) = raised(alerts, "nan")
    assert nan.action.params == {"to_step": 299}


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
    # mid-run the client never raises: the fields are not applied, with one warning
    with Monitor(run_id="r", url=None, meta={"task": "t"}) as mon:
        with pytest.warns(RuntimeWarning, match="unknown objective"):
            mon.update_meta({"objective": bad, "task": "u"})
        assert mon.meta == {"task": "t"}
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


def test_declaring_the_objective_mid_run_resolves_the_alerts_of_the_detectors_it_takes_off(service_on_each_store):
    # a GAN run logged without the key: its climb is read as a divergence; declaring the objective
    # takes the divergence detector off, and its alert must not stay open in the listings
    c = client(service_on_each_store)
    climb = [{"step": s, "loss": 0.7 * 1.4 ** s, "grad_norm": 1.0} for s in range(12)]
    assert post_records(c, "late", climb).status_code == 200
    run = c.get("/v1/runs/late").json()
    assert run["health"] == "critical" and any(a["kind"] == "divergence" for a in run["active_alerts"])
    put = c.put("/v1/runs/late", json={"objective": "adversarial"})
    assert put.status_code == 200
    run = c.get("/v1/runs/late").json()
    assert (run["health"], run["recommendation"], run["active_alerts"]) == ("ok", None, [])
    listed = c.get("/v1/runs/late/alerts").json()["alerts"]
    assert listed and all(a["resolved_step"] == 11 for a in listed if a["kind"] != "spike")
    # the PUT's answer gives those resolutions as stored (a batch's answer gives its alerts so)
    by_id = {a["id"]: a for a in listed}
    answered = put.json()["alerts"]
    assert answered and all(a["event"] == "resolved" and a["raised_at"] == by_id[a["id"]]["raised_at"]
                            for a in answered)
    # the same metadata again changes nothing and resolves nothing
    assert c.put("/v1/runs/late", json={"objective": "adversarial"}).json()["alerts"] == []
    # the facts still run: a NaN after the declaration is critical
    r = post_records(c, "late", [{"step": 12, "loss": float("nan"), "grad_norm": 1.0}])
    assert [a["kind"] for a in r.json()["alerts"]] == ["nan"]


@pytest.mark.parametrize("where", ["in process", "service"])
def test_the_client_hears_what_a_declared_objective_resolves(where, request):
    # without a record after the declaration: the verdict comes with the metadata itself
    url = request.getfixturevalue("service_proc") if where == "service" else None
    events = []
    with Monitor(run_id=f"g-{where[:2]}", url=url, on_alert=lambda a: events.append((a["kind"], a["event"]))) as mon:
        for s in range(12):
            mon.log(s, loss=0.7 * 1.4 ** s)
        assert mon.flush() and mon.health == "critical"
        mon.update_meta({"objective": "adversarial"})
        assert mon.flush()
        assert (mon.health, mon.recommendation) == ("ok", None)
        assert ("divergence", "resolved") in events
        assert all(a["resolved_step"] == 11 for a in mon.alerts if a["severity"] != "info")


def test_an_alert_of_a_detector_that_stays_on_stays_open_when_the_objective_is_declared():
    # a gradient 1000x its size for good: the explosion is one episode, whatever the run declares
    eng = Engine("r")
    out = []
    for s in range(40):
        out += eng.update(Record(s, 2.0 - s / 100, grad_norm=1000.0 if s >= 30 else 1.0 + s % 3))
    (opened,) = raised(out, "grad_explosion")
    assert all(a.kind != "grad_explosion" for a in eng.set_meta({"objective": "adversarial"}))
    assert opened.id in [a.id for a in eng.active_alerts]
    more = [a for s in range(40, 60) for a in eng.update(Record(s, 2.0, grad_norm=1000.0))]
    assert raised(more, "grad_explosion") == []  # not raised again under a new id
