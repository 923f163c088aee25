"""Dashboards as code: the committed JSON is what the code renders, the dashboards show what an
on-call person needs, and `losswatch dashboards push` follows Grafana's HTTP API (against a real loopback
HTTP server standing in for Grafana, which cannot run here)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from losswatch.dashboards import build

REPO = Path(__file__).resolve().parents[1]
DASH = REPO / "dashboards"


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "losswatch.service.cli", "dashboards", *args],
                          capture_output=True, text=True, timeout=timeout)


def _load(name: str) -> dict:
    return json.loads((DASH / "generated" / name).read_text())


def _panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


# --------------------------------------------------------------------------- generated files


def test_committed_files_are_what_the_code_renders(tmp_path):
    res = cli("generate", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    fresh = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert fresh == {Path("generated/losswatch-fleet.json"), Path("generated/losswatch-run.json"),
                     Path("generated/losswatch-service.json"),
                     Path("grafana/provisioning/alerting/losswatch-alerts.yml")}
    for rel in fresh:
        committed = DASH / rel
        assert committed.exists(), f"{rel} is not committed"
        assert committed.read_text() == (tmp_path / rel).read_text(), \
            f"{rel} is stale: run `losswatch dashboards generate` and commit"
    assert cli("generate", "--check").returncode == 0


def test_check_notices_a_stale_file(tmp_path):
    assert cli("generate", "--out", str(tmp_path)).returncode == 0
    f = tmp_path / "generated" / "losswatch-run.json"
    f.write_text(f.read_text().replace("losswatch / run", "hand-edited"))
    res = cli("generate", "--check", "--out", str(tmp_path))
    assert res.returncode == 1 and "losswatch-run.json" in res.stderr


# --------------------------------------------------------------------------- what the dashboards show


def test_three_dashboards_with_stable_uids_on_the_datasource_variable():
    uids = set()
    for name in ("losswatch-fleet.json", "losswatch-run.json", "losswatch-service.json"):
        d = _load(name)
        uids.add(d["uid"])
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] == build.DATASOURCE_UID
        for p in _panels(d):
            if p["type"] == "row":
                continue
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
                assert t["expr"].strip()
    assert uids == {"losswatch-fleet", "losswatch-run", "losswatch-service"}


def test_run_dashboard_log_scales_alert_annotations_and_advice():
    d = _load("losswatch-run.json")
    by_title = {p["title"]: p for p in _panels(d)}
    for title in ("Loss", "Gradient norm", "Learning rate"):
        ts = [p for p in _panels(d) if p["title"] == title and p["type"] == "timeseries"]
        assert ts, title
        scale = ts[0]["fieldConfig"]["defaults"]["custom"]["scaleDistribution"]
        assert scale == {"type": "log", "log": 10}, title
    assert by_title["Steps per second"]["fieldConfig"]["defaults"]["custom"].get("scaleDistribution", {}).get("type") != "log"
    ann = {a["name"]: a for a in d["annotations"]["list"]}["losswatch alerts"]
    assert "losswatch_run_active_alerts" in ann["expr"] and '$run' in ann["expr"]
    assert ann["titleFormat"] == "{{kind}} ({{severity}})" and ann["enable"] is True
    advice = by_title["Open alerts and what to do"]
    mapping = [o for o in advice["fieldConfig"]["overrides"] if o["matcher"]["options"] == "advice"][0]
    texts = mapping["properties"][0]["value"][0]["options"]
    from losswatch.detectors.types import KINDS
    assert set(texts) == set(KINDS), "every alert kind needs its advice text"
    assert {v["name"] for v in d["templating"]["list"]} >= {"datasource", "project", "run"}


def test_fleet_dashboard_health_alert_kinds_and_worst_runs():
    d = _load("losswatch-fleet.json")
    titles = {p["title"] for p in _panels(d)}
    assert {"Runs ok", "Runs warning", "Runs critical", "Runs by health", "Open alerts by kind",
            "Alerts raised per minute, by kind (all projects)", "Worst runs now", "Open alerts"} <= titles
    worst = [p for p in _panels(d) if p["title"] == "Worst runs now"][0]
    assert worst["type"] == "table" and worst["targets"][0]["expr"].startswith("sort_desc(")
    assert all(t["instant"] and t["format"] == "table" for t in worst["targets"])


def test_service_dashboard_ingest_rate_latency_errors():
    d = _load("losswatch-service.json")
    exprs = " ".join(t["expr"] for p in _panels(d) for t in p.get("targets", []))
    for needle in ("losswatch:ingest_records:rate1m", "losswatch:ingest_latency_seconds:quantile_rate5m",
                   "losswatch:ingest_requests:error_ratio_rate5m", 'up{job="losswatch"}', "losswatch_store_up"):
        assert needle in exprs


# --------------------------------------------------------------------------- provisioning


def test_provisioning_files_agree_with_the_generated_dashboards_and_rules():
    prov = DASH / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "losswatch-prometheus.yml").read_text())["datasources"]
    assert [d["uid"] for d in ds] == [build.DATASOURCE_UID] and ds[0]["type"] == "prometheus"
    providers = yaml.safe_load((prov / "dashboards" / "losswatch.yml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"]
    # every Prometheus alert is a Grafana alert with the same PromQL
    grafana = yaml.safe_load((prov / "alerting" / "losswatch-alerts.yml").read_text())
    g_rules = {r["title"]: r for g in grafana["groups"] for r in g["rules"]}
    prom = yaml.safe_load((DASH / "prometheus" / "alerts.rules.yml").read_text())
    p_rules = {r["alert"]: r for g in prom["groups"] for r in g["rules"] if "alert" in r}
    assert set(g_rules) == set(p_rules)
    for name, rule in p_rules.items():
        g = g_rules[name]
        data = {q["refId"]: q for q in g["data"]}
        assert data["A"]["model"]["expr"] == rule["expr"].strip()
        assert data["A"]["datasourceUid"] == build.DATASOURCE_UID
        assert g["condition"] == "C" and g["noDataState"] == "OK"
        assert g["for"] == rule.get("for", "0s")
        assert g["labels"] == rule.get("labels", {})
        assert "$value " not in json.dumps(g["annotations"])  # translated to Grafana's $values
        assert len(g["uid"]) <= 40


# --------------------------------------------------------------------------- push


class FakeGrafana:
    """A loopback HTTP server that answers like Grafana's documented HTTP API
    (https://grafana.com/docs/grafana/latest/developers/http_api/dashboard/, folder/,
    alerting_provisioning/) and rejects requests that do not follow it."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[tuple[str, str, dict | None]] = []
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.rules: dict[str, dict] = {}
        self.errors: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep the test output clean
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                outer.requests.append((method, self.path, body))
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    return self._reply(401, {"message": "invalid API key"})
                if raw and not (self.headers.get("Content-Type") or "").startswith("application/json"):
                    outer.errors.append(f"{method} {self.path}: Content-Type {self.headers.get('Content-Type')}")
                    return self._reply(415, {"message": "bad content type"})
                code, reply = outer.route(method, self.path, body)
                self._reply(code, reply)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def route(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            return (200, self.folders[uid]) if uid in self.folders else (404, {"message": "folder not found"})
        if method == "POST" and path == "/api/folders":
            if not body or not body.get("title"):
                return 400, {"message": "folder title cannot be empty"}
            self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": len(self.folders) + 1}
            return 200, self.folders[body["uid"]]
        if method == "POST" and path == "/api/dashboards/db":
            missing = {"dashboard", "overwrite"} - set(body or {})
            if missing or not isinstance(body["dashboard"], dict) or not body["dashboard"].get("title"):
                self.errors.append(f"bad dashboard body: missing {missing}")
                return 400, {"message": "bad request data"}
            d = body["dashboard"]
            if body.get("folderUid") not in self.folders:
                self.errors.append(f"dashboard into unknown folder {body.get('folderUid')}")
                return 400, {"message": "folder not found"}
            if d.get("uid") in self.dashboards and not body["overwrite"]:
                return 412, {"status": "name-exists", "message": "exists"}
            if d.get("id") is not None:
                self.errors.append("dashboard id set: Grafana would treat it as an update of another id")
            version = self.dashboards.get(d["uid"], {}).get("version", 0) + 1
            self.dashboards[d["uid"]] = {"dashboard": d, "folderUid": body["folderUid"], "version": version}
            return 200, {"id": len(self.dashboards), "uid": d["uid"], "url": f"/d/{d['uid']}/x",
                         "status": "success", "version": version, "slug": "x"}
        if path.startswith("/api/v1/provisioning/alert-rules"):
            uid = path.rsplit("/", 1)[1] if path.count("/") == 5 else None
            if method == "GET":
                return (200, self.rules[uid]) if uid in self.rules else (404, {"message": "rule not found"})
            required = {"title", "ruleGroup", "folderUID", "condition", "data", "noDataState", "execErrState", "for", "orgID"}
            if not body or required - set(body):
                self.errors.append(f"alert rule missing {required - set(body or {})}")
                return 400, {"message": "invalid alert rule"}
            if method == "POST":
                self.rules[body["uid"]] = body
                return 201, body
            if method == "PUT" and uid in self.rules:
                self.rules[uid] = body
                return 200, body
        self.errors.append(f"unexpected {method} {path}")
        return 404, {"message": "not found"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grafana():
    g = FakeGrafana(token="glsa_test_token")
    yield g
    g.close()


def test_push_uploads_every_dashboard_into_a_new_folder_then_overwrites(grafana):
    res = cli("push", "--grafana-url", grafana.url, "--token", "glsa_test_token", "--alert-rules")
    assert res.returncode == 0, res.stderr
    assert not grafana.errors, grafana.errors
    assert grafana.folders == {"losswatch": {"uid": "losswatch", "title": "losswatch", "id": 1}}
    committed = {json.loads(p.read_text())["uid"]: json.loads(p.read_text()) for p in (DASH / "generated").glob("*.json")}
    assert set(grafana.dashboards) == set(committed)
    for uid, got in grafana.dashboards.items():
        assert got["dashboard"]["panels"] == committed[uid]["panels"] and got["folderUid"] == "losswatch"
    posts = [b for m, p, b in grafana.requests if m == "POST" and p == "/api/dashboards/db"]
    assert all(b["overwrite"] is True for b in posts)
    prom = yaml.safe_load((DASH / "prometheus" / "alerts.rules.yml").read_text())
    assert {r["title"] for r in grafana.rules.values()} == {r["alert"] for g in prom["groups"] for r in g["rules"] if "alert" in r}
    assert all(r["folderUID"] == "losswatch" for r in grafana.rules.values())
    # second push: the folder exists, dashboards are overwritten (version 2), rules updated in place
    res = cli("push", "--grafana-url", grafana.url, "--token", "glsa_test_token", "--alert-rules")
    assert res.returncode == 0, res.stderr
    assert not grafana.errors, grafana.errors
    assert len([1 for m, p, _ in grafana.requests if m == "POST" and p == "/api/folders"]) == 1
    assert all(d["version"] == 2 for d in grafana.dashboards.values())
    assert any(m == "PUT" for m, _, _ in grafana.requests)


def test_push_with_a_wrong_token_is_one_clear_line(grafana):
    res = cli("push", "--grafana-url", grafana.url, "--token", "wrong")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "401" in lines[0] and "token" in lines[0]
    assert not grafana.dashboards


def test_push_to_nothing_and_without_token(tmp_path):
    from fixtures.ports import free_port

    res = cli("push", "--grafana-url", f"http://127.0.0.1:{free_port()}", "--token", "t", "--timeout", "3")
    assert res.returncode == 2 and "cannot reach Grafana" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "losswatch.service.cli", "dashboards", "push", "--grafana-url", "http://x"],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert res.returncode == 2 and "--token" in res.stderr
