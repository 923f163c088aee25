"""`losswatch evaluate` over runs recorded from real torch training (digits MLP, 4 LR policies)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from losswatch.service.lr import evaluator as ev
from losswatch.service.lr.examples import train_digits

STEPS = 300
POLICIES = {
    "const-0.003": {"name": "constant", "lr": 0.003},
    "cosine-0.3": {"name": "cosine", "lr": 0.3, "total_steps": STEPS},
    "onecycle-0.5": {"name": "one_cycle", "max_lr": 0.5, "total_steps": STEPS},
    "const-8": {"name": "constant", "lr": 8.0},
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    manifest = []
    raw = {}
    for name, pol in POLICIES.items():
        rows = []

        def report(step, loss, lr, grad_norm, rows=rows):
            rows.append((step, loss, lr))
            return False

        train_digits(pol, steps=STEPS, seed=0, report=report)
        with open(d / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["step", "loss"])  # no lr column: the evaluator takes it from the policy
            w.writerows((s, repr(loss)) for s, loss, _ in rows)
        raw[name] = rows
        manifest.append({"path": f"{name}.csv", "policy": pol, "name": name, "wall_time_s": 1.0})
    (d / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    return d, raw


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "losswatch.service.cli", "evaluate", *args],
                          capture_output=True, text=True, timeout=120)


def test_selection_cost_and_composition(recorded):
    d, raw = recorded
    r = _cli(str(d / "manifest.jsonl"), "--target", "0.3", "--stages", "0,50,150,300", "--format", "json",
             "--png", str(d / "p.png"), "--html", str(d / "r.html"))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    # independent check of the selection: mean of the last 30 raw losses, finite runs only
    tail = {n: np.mean([loss for _, loss, _ in rows[-30:]]) for n, rows in raw.items()}
    healthy = {n: v for n, v in tail.items() if np.isfinite(v) and v < 1.0}
    sel = rep["selection"]
    assert sel["budget"] == STEPS
    assert sel["winner"] == min(healthy, key=healthy.get)
    ranking = [x["name"] for x in sel["ranking"]]
    assert ranking[-1] == "const-8"  # LR 8 kills the ReLUs: the loss never gets below its start
    assert ranking.index("const-0.003") > ranking.index(sel["winner"])
    # cost: the winner reaches 0.3 first; the slow constant never does
    cost = {x["name"]: x["steps_to_target"] for x in rep["cost"]["ranking"]}
    assert cost["const-0.003"] is None and cost["const-8"] is None
    first = min((s, n) for n, s in cost.items() if s is not None)[1]
    assert rep["cost"]["winner"] == first
    # raw check: the winner's raw losses really went below 0.3 around that step
    s_star = cost[first]
    assert np.median([loss for s, loss, _ in raw[first] if s_star - 10 <= s <= s_star + 10]) <= 0.4
    comp = rep["composition"]
    assert [(st["start"], st["end"]) for st in comp["stages"]] == [(0, 50), (50, 150), (150, 300)]
    assert comp["stages"][-1]["leader"] == sel["winner"] or comp["stages"][-1]["leader"] in healthy
    assert all(st["leader"] != "const-8" for st in comp["stages"][1:])
    png = (d / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    page = (d / "r.html").read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "<script" not in page
    assert all(n in page for n in POLICIES)


def test_text_output_and_budget(recorded):
    d, _ = recorded
    r = _cli(str(d / "manifest.jsonl"), "--budget", "40")
    assert r.returncode == 0 and "within 40 steps" in r.stdout
    runs = ev.load_manifest(str(d / "manifest.jsonl"))
    for run in runs:
        run.prepare()
    sel = ev.select_policy(runs, 40)
    assert sel["ranking"][0]["best"] <= sel["ranking"][1]["best"]
    # LR came from the policy (no lr column in the files)
    cos = next(x for x in runs if x.name == "cosine-0.3")
    assert cos.lr[0] == pytest.approx(0.3) and cos.lr[150] == pytest.approx(0.15)


@pytest.mark.parametrize("content,msg", [
    ('{"policy": {"name": "constant", "lr": 0.1}}\n', "needs a 'path'"),
    ('{"path": "nope.csv"}\n', "entry 1"),
    ('{"path": "const-8.csv", "policy": {"name": "cosine", "lr": 0.1}}\n', "missing parameter 'total_steps'"),
    ("{oops\n", "not JSON"),
])
def test_bad_manifests(recorded, content, msg):
    d, _ = recorded
    m = d / "bad.jsonl"
    m.write_text(content)
    r = _cli(str(m))
    assert r.returncode == 2 and msg in r.stderr


def test_bad_stages(recorded):
    d, _ = recorded
    r = _cli(str(d / "manifest.jsonl"), "--stages", "0,x")
    assert r.returncode == 2 and "--stages" in r.stderr


def test_a_run_that_goes_nan_is_diverged_and_ranks_last(recorded, tmp_path):
    d, raw = recorded
    rows = raw["cosine-0.3"]
    with open(tmp_path / "nan.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "lr"])
        for s, loss, lr in rows:
            w.writerow([s, "nan" if s >= 200 else repr(loss * 0.5), lr])  # better than all, until NaN
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": str(d / "cosine-0.3.csv"), "name": "ok"}) + "\n"
                                      + json.dumps({"path": "nan.csv", "name": "nan"}) + "\n")
    runs = ev.load_manifest(str(tmp_path / "m.jsonl"))
    for r in runs:
        r.prepare()
    assert runs[1].diverged_at == 200 and runs[0].diverged_at is None
    assert ev.select_policy(runs, 150)["winner"] == "nan"  # before it went NaN it was ahead
    late = ev.select_policy(runs, 300)
    assert late["winner"] == "ok" and late["ranking"][1]["diverged_at"] == 200


def test_record_into_the_policy_database(recorded, tmp_path):
    from losswatch.service.lr.policy_db import PolicyDB

    d, raw = recorded
    task = {"model_family": "mlp-64", "dataset": "digits", "optimizer": "sgd", "batch_size": 32}
    db = tmp_path / "p.sqlite"
    r = _cli(str(d / "manifest.jsonl"), "--budget", "200", "--record", json.dumps(task), "--db", str(db))
    assert r.returncode == 0 and "recorded 4 runs" in r.stdout, r.stderr
    entries = PolicyDB(str(db)).list(**task)
    assert len(entries) == 4 and {e.source for e in entries} == {"evaluate"} and all(e.steps == 200 for e in entries)
    best = PolicyDB(str(db)).best(**task, max_steps=200)
    sel = json.loads(_cli(str(d / "manifest.jsonl"), "--budget", "200", "--format", "json").stdout)["selection"]
    assert POLICIES[sel["winner"]].items() <= best.policy.items() and best.notes.endswith(sel["winner"])
    r = _cli(str(d / "manifest.jsonl"), "--record", '{"model_family": "x"}', "--db", str(db))
    assert r.returncode == 2 and "missing field 'dataset'" in r.stderr
    assert len(PolicyDB(str(db)).list(**task)) == 4
