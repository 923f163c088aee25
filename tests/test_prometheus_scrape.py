"""A real Prometheus scraping a real losswatch service (uvicorn subprocess) fed through the REST
API: every per-run series arrives with the values that were sent (NaN and +Inf included), every
PromQL expression of the dashboards and of the rules executes and returns data, and the alerts
fire in Prometheus itself. The Prometheus config is deploy/prometheus.yml (what docker-compose
mounts), rewritten for loopback and 1 s scrapes; the rules are dashboards/prometheus/*.rules.yml.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import httpx
import pytest
import yaml

from fixtures.prometheus_proc import PrometheusProc, scrape_config_for
from service_helpers import num, same

REPO = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((REPO / "dashboards" / "prometheus").glob("*.rules.yml"))
GENERATED = REPO / "dashboards" / "generated"

# Values Grafana would put in the dashboards' template variables for this scenario.
TEMPLATE_VARS = {"$project": ".*", "$run": "diverging", "$__rate_interval": "1m", "${datasource}": "x"}


# --------------------------------------------------------------------------- the scenario


def _diverging() -> list[dict]:
    """Loss falls for 200 steps, then climbs 5% a step: a run going off the rails."""
    recs, loss = [], 3.0
    for s in range(240):
        loss = 3.0 * 0.995 ** s + 0.01 * math.sin(s) if s < 200 else loss * 1.05
        recs.append({"step": s, "loss": round(loss, 6), "grad_norm": round(1.0 + 0.3 * max(0, s - 200), 4),
                     "lr": 0.02})
    return recs


def _nan_run() -> list[dict]:
    """Healthy, then the loss turns NaN and the gradient norm infinite on the last step."""
    recs = [{"step": s, "loss": round(2.5 * 0.99 ** s, 6), "grad_norm": 0.8, "lr": 3e-4} for s in range(120)]
    recs.append({"step": 120, "loss": "NaN", "grad_norm": "Infinity", "lr": 3e-4})
    return recs


def _healthy() -> list[dict]:
    return [{"step": s, "loss": round(2.0 * 0.998 ** s + 0.2, 6), "grad_norm": 0.5, "lr": 1e-3 * (1 + s) / 200}
            for s in range(200)]


#: the finished run is marked so by its metadata once sent (what a client's clean close() does)
FINISHED_RUN = "finished"
RUNS = {"diverging": ("bench", _diverging()), "nan-run": ("bench", _nan_run()), "healthy": ("other", _healthy()),
        FINISHED_RUN: ("other", _healthy()[:100])}


@pytest.fixture(scope="module")
def stack(service_proc, tmp_path_factory):
    """Prometheus scraping the service, which is then fed three runs, rejected batches and applied
    actions (each twice, a scrape apart: Prometheus counts a counter's increase, not its birth)."""
    host_port = service_proc.removeprefix("http://")
    prom = PrometheusProc(scrape_config_for([host_port], rule_files=RULE_FILES),
                          workdir=tmp_path_factory.mktemp("prometheus"))
    http = httpx.Client(base_url=service_proc, timeout=10)
    try:
        prom.wait_for(lambda: prom.query('up{job="losswatch"} == 1'), timeout=30)
        sent_at: dict[str, tuple[float, float]] = {}
        for run, (project, recs) in RUNS.items():
            t0 = time.time()
            for i in range(0, len(recs), 50):
                r = http.post(f"/v1/runs/{run}/steps", params={"project": project}, json={"records": recs[i:i + 50]})
                assert r.status_code == 200, r.text
            sent_at[run] = (t0, time.time())
        r = http.put(f"/v1/runs/{FINISHED_RUN}", json={"project": "other", "status": "finished"})
        assert r.status_code == 200, r.text
        for attempt in range(2):
            bad = http.post("/v1/runs/diverging/steps", content=b'{"records": [{"step": "x"',
                            headers={"Content-Type": "application/json"})
            assert 400 <= bad.status_code < 500
            r = http.post("/v1/runs/diverging/actions", params={"project": RUNS["diverging"][0]}, json={"step": 239, "action": {"type": "scale_lr", "factor": 0.1},
                                                             "applied": True, "dry_run": False})
            assert r.status_code == 201, r.text
            if attempt == 0:
                prom.wait_for(lambda: prom.query("losswatch_actions_applied_total")
                              and prom.query('losswatch_ingest_requests_total{code=~"4.."}'), timeout=30)
        rest = {run: http.get(f"/v1/runs/{run}", params={"project": project}).json()
                for run, (project, _) in RUNS.items()}
        prom.wait_for(lambda: len(prom.query("losswatch_run_step")) == len(RUNS), timeout=30)
        prom.wait_for(lambda: prom.query("losswatch_run_finished"), timeout=30)
        prom.wait_for(lambda: prom.query('losswatch:ingest_records:rate1m{result="accepted"} > 0'), timeout=30)
        prom.wait_for(lambda: prom.query("increase(losswatch_actions_applied_total[1m]) > 0"), timeout=30)
        # every recording rule evaluated over at least two scrapes of every counter (a counter born
        # in the last scrape has no rate yet), so the tests below do not race the rule evaluation
        for name in sorted({r["record"] for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]
                            for r in g["rules"] if "record" in r}):
            prom.wait_for(lambda: prom.query(name), timeout=30)
        yield {"prom": prom, "http": http, "rest": rest, "sent_at": sent_at, "url": service_proc}
    finally:
        prom.stop()
        http.close()


# --------------------------------------------------------------------------- per-run series


def test_scrape_target_is_up_with_the_compose_job_name(stack):
    prom = stack["prom"]
    targets = prom.targets()
    assert [t["labels"]["job"] for t in targets] == ["losswatch"]
    assert targets[0]["health"] == "up", targets[0].get("lastError")


@pytest.mark.parametrize("metric, field", [("losswatch_run_loss", "loss"), ("losswatch_run_grad_norm", "grad_norm"),
                                           ("losswatch_run_lr", "lr")])
def test_per_run_values_arrive_as_sent_nan_and_inf_included(stack, metric, field):
    prom = stack["prom"]
    got = {s["metric"]["run"]: s for s in prom.query(metric)}
    assert set(got) == set(RUNS)
    for run, (project, recs) in RUNS.items():
        series = got[run]
        assert series["metric"]["project"] == project and series["metric"]["job"] == "losswatch"
        # float() reads the wire's "NaN"/"Infinity" and Prometheus's "+Inf" alike
        sent = num(recs[-1][field])
        arrived = num(series["value"][1])
        assert same(arrived, sent), f"{metric}{{run={run}}}: sent {sent}, Prometheus has {series['value'][1]}"
    # spelled out: the NaN loss is a NaN in Prometheus, the infinite grad-norm +Inf
    if field == "loss":
        assert got["nan-run"]["value"][1] == "NaN"
    if field == "grad_norm":
        assert got["nan-run"]["value"][1] == "+Inf"


def test_step_health_last_seen_and_active_alerts_match_the_service(stack):
    prom, rest = stack["prom"], stack["rest"]
    steps = {s["metric"]["run"]: float(s["value"][1]) for s in prom.query("losswatch_run_step")}
    assert steps == {run: float(recs[-1]["step"]) for run, (_, recs) in RUNS.items()}
    health = {s["metric"]["run"]: float(s["value"][1]) for s in prom.query("losswatch_run_health")}
    assert health == {run: float({"ok": 0, "warning": 1, "critical": 2}[rest[run]["health"]]) for run in RUNS}
    seen = {s["metric"]["run"]: float(s["value"][1]) for s in prom.query("losswatch_run_last_seen_timestamp_seconds")}
    for run, (t0, t1) in stack["sent_at"].items():
        assert t0 - 1 <= seen[run] <= t1 + 1
    active = {(s["metric"]["run"], s["metric"]["kind"], s["metric"]["severity"])
              for s in prom.query("losswatch_run_active_alerts") if s["value"][1] == "1"}
    expected = set()
    for run in RUNS:
        worst: dict[str, str] = {}
        for a in rest[run]["active_alerts"]:
            if a["kind"] not in worst or ["info", "warning", "critical"].index(a["severity"]) > \
                    ["info", "warning", "critical"].index(worst[a["kind"]]):
                worst[a["kind"]] = a["severity"]
        expected |= {(run, k, s) for k, s in worst.items()}
    assert active == expected
    # the scenario does what it says (the detectors flag it)
    assert ("diverging", "divergence") in {(r, k) for r, k, _ in active}
    assert ("nan-run", "nan") in {(r, k) for r, k, _ in active}
    assert rest["healthy"]["health"] == "ok"
    assert float(prom.query("losswatch_runs_exported")[0]["value"][1]) == len(RUNS)
    assert float(prom.query("losswatch_store_up")[0]["value"][1]) == 1


def test_service_counters_arrive(stack):
    prom = stack["prom"]
    accepted = float(prom.query('losswatch_ingest_records_total{result="accepted"}')[0]["value"][1])
    assert accepted == sum(len(recs) for _, recs in RUNS.values())
    codes = {s["metric"]["code"] for s in prom.query("losswatch_ingest_requests_total")}
    assert "200" in codes and any(c.startswith("4") for c in codes)
    assert prom.query('losswatch_actions_applied_total{type="scale_lr"} == 2')
    kinds = {s["metric"]["kind"] for s in prom.query("losswatch_alerts_total > 0")}
    assert {"divergence", "nan"} <= kinds
    assert prom.query("losswatch_ingest_latency_seconds_count > 0")


# --------------------------------------------------------------------------- every expression


def _substitute(expr: str) -> str:
    for k, v in TEMPLATE_VARS.items():
        expr = expr.replace(k, v)
    assert "$" not in re.sub(r'"\$1"', "", expr), f"unsubstituted variable in {expr}"
    return expr


def _dashboard_queries() -> list[tuple[str, str, str]]:
    """(where, kind, expr) for every query of every generated dashboard."""
    out = []
    for f in sorted(GENERATED.glob("*.json")):
        d = json.loads(f.read_text())
        panels = [p for top in d["panels"] for p in [top, *top.get("panels", [])]]
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"{f.name} / {p['title']} / {t['refId']}", "instant" if t.get("instant") else "range",
                            t["expr"]))
        for a in d.get("annotations", {}).get("list", []):
            if a.get("expr"):
                out.append((f"{f.name} / annotation {a['name']}", "range", a["expr"]))
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                out.append((f"{f.name} / variable {v['name']}", "label_values", v["query"]))
    return out


DASHBOARD_QUERIES = _dashboard_queries()


@pytest.mark.parametrize("where, kind, expr", DASHBOARD_QUERIES, ids=[w for w, _, _ in DASHBOARD_QUERIES])
def test_every_dashboard_query_returns_data(stack, where, kind, expr):
    prom = stack["prom"]
    expr = _substitute(expr)
    if kind == "label_values":
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", expr)
        assert m, expr
        values = prom.label_values(m.group(2), m.group(1))
        assert values, f"{where}: {expr} has no values"
        return
    if kind == "instant":
        result = prom.query(expr)
    else:
        now = time.time()
        result = prom.query_range(expr, now - 60, now, 1)
    assert result, f"{where}: {expr} returned no data"


def _alert_rules() -> dict[str, dict]:
    return {r["alert"]: r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]
            for r in g["rules"] if "alert" in r}


def _selectors(expr: str) -> list[str]:
    """The vector selectors of a PromQL expression (metric name and matchers), for our metrics."""
    return [m.group(0) for m in re.finditer(r"\b(?:losswatch[a-zA-Z0-9_:]*|up)\b(?:\{[^}]*\})?", expr)
            if not expr[m.end():m.end() + 1] == "("]


def test_every_rule_was_evaluated_by_prometheus_without_error(stack):
    groups = stack["prom"].rules()
    rules = [r for g in groups for r in g["rules"]]
    n_files = sum(len(g["rules"]) for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"])
    assert len(rules) == n_files
    for r in rules:
        assert r["health"] == "ok", (r["name"], r.get("lastError"))
    recorded = {r["name"] for r in rules if r["type"] == "recording"}
    for name in recorded:
        assert stack["prom"].query(name), f"recording rule {name} has no data"


def test_every_selector_of_every_expression_has_data(stack):
    """Catches a misspelt metric or label anywhere, also in expressions that are (rightly) empty
    while everything is healthy, such as `up == 0`."""
    prom = stack["prom"]
    exprs = [e for _, _, e in DASHBOARD_QUERIES] + [r["expr"] for r in _alert_rules().values()]
    selectors = {_substitute(s) for e in exprs for s in _selectors(e)}
    assert len(selectors) > 10
    for sel in sorted(selectors):
        assert prom.query(f"count({sel})"), f"selector {sel} matches no series"


def test_alert_expressions_hold_exactly_when_they_should(stack):
    prom, rest = stack["prom"], stack["rest"]
    rules = _alert_rules()

    def runs(name: str, at: float | None = None) -> set[str]:
        return {s["metric"].get("run") for s in prom.query(rules[name]["expr"], at=at)}

    assert "nan-run" in runs("LosswatchRunNaN") and "healthy" not in runs("LosswatchRunNaN")
    assert "diverging" in runs("LosswatchRunDiverging") and "healthy" not in runs("LosswatchRunDiverging")
    assert runs("LosswatchRunCritical") == {r for r in RUNS if rest[r]["health"] == "critical"}
    assert runs("LosswatchRunCritical")  # the scenario has critical runs
    # nobody has been quiet for 10 minutes yet; evaluated 11 minutes from now, all have, and the
    # one marked finished is left alone
    assert runs("LosswatchRunStoppedReporting") == set()
    assert runs("LosswatchRunStoppedReporting", at=time.time() + 660) == set(RUNS) - {FINISHED_RUN}
    assert {s["metric"]["run"] for s in prom.query("losswatch_run_finished")} == {FINISHED_RUN}
    rejected = prom.query(rules["LosswatchIngestRejected"]["expr"])
    assert rejected and all(s["metric"]["code"].startswith("4") for s in rejected)
    # healthy service: these hold only in the tests below (service stopped, store killed)
    for name in ("LosswatchServiceDown", "LosswatchStoreDown", "LosswatchIngestErrors"):
        assert prom.query(rules[name]["expr"]) == [], name


def test_prometheus_fires_the_run_alerts(stack):
    prom = stack["prom"]

    def states() -> dict[tuple[str, str], str]:
        return {(a["labels"]["alertname"], a["labels"].get("run", "")): a["state"] for a in prom.alerts()}

    want = {("LosswatchRunNaN", "nan-run"): "firing", ("LosswatchRunDiverging", "diverging"): "firing"}
    got = prom.wait_for(lambda: (s := states()) and all(s.get(k) == v for k, v in want.items()) and s, timeout=20)
    # `for: 1m`: pending during the test
    assert got.get(("LosswatchRunCritical", "diverging")) == "pending"
    assert not any(run == "healthy" for _, run in got)


# --------------------------------------------------------------------------- service and store down


def test_service_down_alert_holds_once_the_service_is_gone(service_factory, prometheus_factory):
    svc = service_factory()
    prom = prometheus_factory(scrape_config_for([svc.url.removeprefix("http://")], rule_files=RULE_FILES))
    expr = _alert_rules()["LosswatchServiceDown"]["expr"]
    prom.wait_for(lambda: prom.query('up{job="losswatch"} == 1'), timeout=20)
    assert prom.query(expr) == []
    svc.stop()
    down = prom.wait_for(lambda: prom.query(expr), timeout=20)
    assert down[0]["metric"]["instance"] == svc.url.removeprefix("http://")
    alert = prom.wait_for(lambda: [a for a in prom.alerts() if a["labels"]["alertname"] == "LosswatchServiceDown"],
                          timeout=20)
    assert alert[0]["state"] == "pending"  # `for: 1m`


def test_store_down_and_ingest_errors_hold_once_redis_is_gone(service_factory, prometheus_factory, redis_proc):
    svc = service_factory(args=["--store", redis_proc.url])
    prom = prometheus_factory(scrape_config_for([svc.url.removeprefix("http://")], rule_files=RULE_FILES))
    expr = _alert_rules()["LosswatchStoreDown"]["expr"]
    prom.wait_for(lambda: prom.query("losswatch_store_up == 1"), timeout=20)
    assert prom.query(expr) == []
    redis_proc.kill9()
    down = prom.wait_for(lambda: prom.query(expr), timeout=30)
    assert down[0]["metric"]["instance"] == svc.url.removeprefix("http://")
    # with the store gone, ingest fails with 5xx: the server-error alert's expression holds
    errors = _alert_rules()["LosswatchIngestErrors"]["expr"]
    assert prom.query(errors) == []
    with httpx.Client(base_url=svc.url, timeout=10) as http:
        for attempt in range(2):  # twice, a scrape apart: Prometheus counts increases, not births
            r = http.post("/v1/runs/r/steps", json={"records": [{"step": attempt, "loss": 1.0}]})
            assert r.status_code >= 500, r.text
            if attempt == 0:
                prom.wait_for(lambda: prom.query('losswatch_ingest_requests_total{code=~"5.."}'), timeout=30)
    ratio = prom.wait_for(lambda: prom.query(errors), timeout=30)
    assert float(ratio[0]["value"][1]) > 0.05
