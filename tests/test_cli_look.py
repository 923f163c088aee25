"""`losswatch runs`, `show RUN` and `export RUN` against a real service holding a real run that
diverges: a least-squares model trained by gradient descent whose LR warms up past the largest
stable one (2 / the Hessian's top eigenvalue), streamed through the real client. The export
round-trips through `losswatch replay`: the exported CSV and JSON lines raise exactly the alerts
the records logged during training raise."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures.ports import free_port
from service_helpers import client, get_json, post_records

REPO = Path(__file__).resolve().parents[1]
RUN = "lsq-hot"
PROJECT = "look"


def losswatch(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LOSSWATCH_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "losswatch.service.cli", *args], cwd=str(cwd), env=full,
                          capture_output=True, text=True, timeout=120)


def least_squares_records(steps: int, lr_peak_over_stable: float, seed: int = 0) -> list[dict]:
    """Mini-batch gradient descent on a linear least-squares problem, the LR rising linearly over
    the first half from 5 % of the stable limit to ``lr_peak_over_stable`` times it."""
    rng = np.random.RandomState(seed)
    x = rng.randn(512, 16)
    y = x @ rng.randn(16) + 0.1 * rng.randn(512)
    stable = 2.0 / np.linalg.eigvalsh(x.T @ x / len(x)).max()
    w = np.zeros(16)
    records = []
    with np.errstate(all="ignore"):  # overflow becomes inf, then NaN, as on a GPU
        for step in range(steps):
            lr = stable * (0.05 + (lr_peak_over_stable - 0.05) * min(1.0, step / (steps / 2)))
            idx = rng.randint(0, len(x), 64)
            r = x[idx] @ w - y[idx]
            g = x[idx].T @ r / len(idx)
            records.append({"step": step, "loss": float(0.5 * np.mean(r * r)),
                            "grad_norm": float(np.linalg.norm(g)), "lr": float(lr)})
            w = w - lr * g
    return records


@pytest.fixture(scope="module")
def hot_run(service_proc):
    """The service (URL) with two runs: a healthy one, then the diverging one (newest)."""
    from losswatch.client import Monitor

    healthy = least_squares_records(120, 0.5, seed=1)
    hot = least_squares_records(400, 10.0)
    assert math.isnan(hot[-1]["loss"])  # it really blew up: overflow, then NaN
    for run_id, project, records in (("lsq-calm", "other", healthy), (RUN, PROJECT, hot)):
        with Monitor(run_id=run_id, url=service_proc, project=project) as mon:
            for r in records:
                mon.log(r["step"], loss=r["loss"], grad_norm=r["grad_norm"], lr=r["lr"])
            assert mon.flush(30)
    return service_proc, hot


def test_runs_is_a_table_newest_first_and_filters_by_project(hot_run):
    url, _ = hot_run
    res = losswatch("runs", "--url", url)
    assert res.returncode == 0, res.stderr
    header, *rows = res.stdout.splitlines()
    assert header.split()[:4] == ["RUN", "PROJECT", "HEALTH", "LAST"]
    assert [r.split()[0] for r in rows] == [RUN, "lsq-calm"]  # the hot run reported last
    hot = rows[0].split()
    assert hot[1:5] == [PROJECT, "critical", "399", "NaN"]
    active = get_json(url, f"/v1/runs/{RUN}?project={PROJECT}")["active_alerts"]
    assert f"{len(active)}: " in rows[0] and "nan" in rows[0]
    assert rows[1].split()[2] == "ok"

    only = losswatch("runs", "--project", PROJECT, env={"LOSSWATCH_URL": url})  # the URL from the env
    assert only.returncode == 0, only.stderr
    assert [r.split()[0] for r in only.stdout.splitlines()[1:]] == [RUN]


def test_show_gives_the_summary_alerts_with_advice_and_a_sparkline(hot_run, tmp_path):
    url, records = hot_run
    png = tmp_path / "hot.png"
    res = losswatch("show", RUN, "--project", PROJECT, "--url", url, "--width", "50", "--png", str(png))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    summary = get_json(url, f"/v1/runs/{RUN}?project={PROJECT}")
    assert f"run {RUN}  project {PROJECT}  health CRITICAL" in out
    assert f"steps stored {len(records)}, last step {len(records) - 1}" in out
    for alert in summary["active_alerts"]:  # each active alert with its message and its advice
        assert alert["message"] in out
        assert alert["action"]["reason"] in out
    assert summary["recommendation"]["reason"] in out
    # the sparkline: 50 columns of blocks, log scale, the NaN tail marked where it happened
    head = next(i for i, line in enumerate(out.splitlines()) if line.startswith("loss, steps 0..399"))
    line = out.splitlines()[head + 1].strip()
    assert "log scale" in out.splitlines()[head] and len(line) == 50
    first_bad = next(r["step"] for r in records if not math.isfinite(r["loss"]))
    assert line[first_bad * 50 // 400] == "×" and line[-1] == "×"
    assert set(line[: first_bad * 50 // 400]) <= set("▁▂▃▄▅▆▇█")
    assert line[0] != line[first_bad * 50 // 400 - 1]  # it climbed before it broke
    history = get_json(url, f"/v1/runs/{RUN}/alerts?project={PROJECT}")["alerts"]
    assert f"alert history (last {min(10, len(history))} of {len(history)})" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_round_trips_through_replay(hot_run, tmp_path):
    url, records = hot_run
    original = tmp_path / "original.jsonl"
    original.write_text("".join(json.dumps(r) + "\n" for r in records))  # NaN as JSON's NaN token
    expected = replay(original)
    kinds = {a["kind"] for a in expected if a["severity"] == "critical"}
    assert "nan" in kinds and len(kinds) > 1, expected  # seen coming before the NaN

    csv_file = tmp_path / "hot.csv"
    res = losswatch("export", RUN, "--project", PROJECT, "--url", url, "-o", str(csv_file))
    assert res.returncode == 0, res.stderr
    assert f"{len(records)} steps" in res.stderr
    lines = csv_file.read_text().splitlines()
    assert lines[0].startswith("step,loss,grad_norm,lr,val_loss,ts") and len(lines) == len(records) + 1
    assert any(line.split(",")[1] == "nan" for line in lines[1:])

    res = losswatch("export", RUN, "--project", PROJECT, "--format", "jsonl", "--url", url)  # to stdout
    assert res.returncode == 0, res.stderr
    exported = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["step"] for r in exported] == [r["step"] for r in records]
    assert any(r["loss"] == "NaN" for r in exported)
    jsonl_file = tmp_path / "hot.jsonl"
    jsonl_file.write_text(res.stdout)

    assert replay(csv_file) == expected
    assert replay(jsonl_file) == expected
    # and the service, fed the same records by the client, raised those alerts too
    served = {(a["kind"], a["step"]) for a in get_json(url, f"/v1/runs/{RUN}/alerts?project={PROJECT}")["alerts"]}
    assert served == {(a["kind"], a["step"]) for a in expected if a["event"] == "raised"}


def replay(path: Path) -> list[dict]:
    res = losswatch("replay", str(path), "--format", "jsonl", "--run-id", RUN)
    assert res.returncode == 0, res.stderr
    keep = ("event", "kind", "severity", "step", "resolved_step", "message", "action")
    return [{k: a.get(k) for k in keep} for a in map(json.loads, res.stdout.splitlines())]


def test_an_unknown_run_exits_1_and_names_it(hot_run):
    url, _ = hot_run
    for command in ("show", "export"):
        res = losswatch(command, "no-such-run", "--url", url)
        assert res.returncode == 1
        assert "no run 'no-such-run'" in res.stderr and "losswatch runs" in res.stderr
        assert res.stdout == ""


def test_no_service_exits_2_and_says_where_it_looked(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("runs",), ("show", RUN), ("export", RUN, "-o", str(tmp_path / "x.csv"))):
        res = losswatch(*args, "--url", url)
        assert res.returncode == 2, res
        assert f"no losswatch service answers at {url}" in res.stderr
    assert not (tmp_path / "x.csv").exists()  # nothing half-written


def test_a_service_with_tokens_asks_for_one(service_factory):
    svc = service_factory(env={"LOSSWATCH_TOKENS": "secret-a=" + PROJECT})
    res = losswatch("runs", "--url", svc.url)
    assert res.returncode == 1 and "pass --token" in res.stderr and "401" in res.stderr
    res = losswatch("runs", "--url", svc.url, "--token", "wrong")
    assert res.returncode == 1 and "refused" in res.stderr and "--token" in res.stderr
    res = losswatch("runs", "--url", svc.url, env={"LOSSWATCH_TOKEN": "secret-a"})  # the client's variable
    assert res.returncode == 0, res.stderr
    assert "no runs" in res.stderr


def test_the_sparkline_marks_non_finite_values_gaps_and_falls_back_to_linear():
    from losswatch.service.terminal import NOT_FINITE, sparkline

    line, log = sparkline(list(range(8)), [1.0, 10.0, 100.0, None, None, 1000.0, float("inf"), 5.0], 8)
    assert log and line[0] == "▁" and line[5] == "█" and line[3:5] == "  " and line[6] == NOT_FINITE
    assert line[1] == "▃" and line[2] == "▆"  # equal steps on the log scale: 1, 10, 100, 1000
    line, log = sparkline([0, 1, 2], [0.0, 1.0, 2.0], 80)  # a zero: no log scale; one column a step
    assert not log and line == "▁▅█"
    assert sparkline([], [], 10) == ("", True)


def test_show_finds_the_project_of_a_run_id_and_asks_when_projects_share_it(hot_run):
    url, _ = hot_run
    res = losswatch("show", RUN, "--url", url)  # no --project: the one run of that id the service lists
    assert res.returncode == 0 and f"run {RUN}" in res.stdout, res.stderr
    c = client(url)
    for project in ("p1", "p2"):
        assert post_records(c, "twin", [{"step": 0, "loss": 1.0}], project=project).status_code == 200
    res = losswatch("show", "twin", "--url", url)
    assert res.returncode == 1 and "p1, p2" in res.stderr and "--project" in res.stderr
    res = losswatch("export", "twin", "--project", "p2", "--format", "jsonl", "--url", url)
    assert res.returncode == 0 and [json.loads(line)["step"] for line in res.stdout.splitlines()] == [0]
