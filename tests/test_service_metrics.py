"""GET /metrics through real HTTP, parsed with prometheus_client's own parser."""

from __future__ import annotations

import math
import random
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service_helpers import client, post_records


def _samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _one(samples, name, **labels):
    hits = [s for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0].value


def test_metrics_content_with_nan(service_factory):
    svc = service_factory()
    c = client(svc.url)
    c.put("/v1/runs/m-1", json={"project": "pm"})
    recs = [{"step": s, "loss": 2.0 - 0.001 * s, "grad_norm": 0.5, "lr": 3e-4} for s in range(50)]
    assert post_records(c, "m-1", recs, project="pm").status_code == 200
    assert post_records(c, "m-1", recs[:10], project="pm").status_code == 200          # 10 duplicates
    assert post_records(c, "m-2", [{"step": 0, "loss": 1.0}, {"step": 1, "loss": float("nan")}],
                        project="pm").status_code == 200
    assert post_records(c, "m-1", [{"step": "x"}]).status_code == 422   # 1 rejected
    c.post("/v1/runs/m-1/actions", params={"project": "pm"},
           json={"step": 49, "action": {"type": "scale_lr", "factor": 0.1}, "applied": True})
    c.post("/v1/runs/m-1/actions", params={"project": "pm"},
           json={"step": 49, "action": {"type": "stop"}, "applied": False, "dry_run": True})
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    s = _samples(r.text)
    assert _one(s, "losswatch_run_loss", run="m-1", project="pm") == recs[-1]["loss"]
    assert _one(s, "losswatch_run_grad_norm", run="m-1", project="pm") == 0.5
    assert _one(s, "losswatch_run_lr", run="m-1", project="pm") == 3e-4
    assert _one(s, "losswatch_run_step", run="m-1", project="pm") == 49
    assert _one(s, "losswatch_run_health", run="m-1", project="pm") == 0
    assert abs(_one(s, "losswatch_run_last_seen_timestamp_seconds", run="m-1") - time.time()) < 60
    assert math.isnan(_one(s, "losswatch_run_loss", run="m-2", project="pm"))
    assert _one(s, "losswatch_run_health", run="m-2") == 2
    assert _one(s, "losswatch_run_active_alerts", run="m-2", kind="nan", severity="critical") == 1
    assert _one(s, "losswatch_alerts_total", kind="nan", severity="critical") >= 1
    assert _one(s, "losswatch_ingest_records_total", result="accepted") == 52
    assert _one(s, "losswatch_ingest_records_total", result="duplicate") == 10
    assert _one(s, "losswatch_ingest_records_total", result="rejected") == 1
    assert _one(s, "losswatch_ingest_requests_total", code="200") == 3
    assert _one(s, "losswatch_ingest_requests_total", code="422") == 1
    assert _one(s, "losswatch_ingest_latency_seconds_count") == 4
    assert _one(s, "losswatch_actions_applied_total", type="scale_lr") == 1
    assert not [x for x in s.get("losswatch_actions_applied_total", []) if x.labels["type"] == "stop"]
    assert _one(s, "losswatch_runs_exported") == 2
    assert _one(s, "losswatch_store_up") == 1


def test_inactive_runs_stop_being_exported(service_factory):
    svc = service_factory(env={"LOSSWATCH_METRICS_TTL": "2"})
    c = client(svc.url)
    assert post_records(c, "ttl-old", [{"step": 0, "loss": 1.0}]).status_code == 200
    time.sleep(1.2)
    assert post_records(c, "ttl-new", [{"step": 0, "loss": 1.0}]).status_code == 200
    s = _samples(c.get("/metrics").text)
    assert {x.labels["run"] for x in s["losswatch_run_loss"]} == {"ttl-old", "ttl-new"}
    time.sleep(1.2)
    s = _samples(c.get("/metrics").text)
    assert {x.labels["run"] for x in s["losswatch_run_loss"]} == {"ttl-new"}
    assert _one(s, "losswatch_runs_exported") == 1
    # the run itself is still there; only the export stopped
    assert c.get("/v1/runs/ttl-old").status_code == 200
    # a new batch brings it back
    assert post_records(c, "ttl-old", [{"step": 1, "loss": 0.9}]).status_code == 200
    s = _samples(c.get("/metrics").text)
    assert _one(s, "losswatch_run_step", run="ttl-old") == 1


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_only_runs_marked_finished_export_losswatch_run_finished(store, service_factory, request):
    env = {}
    if store == "redis":
        env["LOSSWATCH_STORE"] = request.getfixturevalue("redis_factory")().url
    svc = service_factory(env=env)
    c = client(svc.url)
    for run in ("fin-done", "fin-busy"):
        assert post_records(c, run, [{"step": 0, "loss": 1.0}], project="pf").status_code == 200
    assert c.put("/v1/runs/fin-done", json={"project": "pf", "status": "finished"}).status_code == 200
    s = _samples(c.get("/metrics").text)
    assert _one(s, "losswatch_run_finished", run="fin-done", project="pf") == 1
    assert not [x for x in s.get("losswatch_run_finished", []) if x.labels["run"] == "fin-busy"]
    # a status the API does not know is refused; a resumed run (new metadata) is running again
    assert c.put("/v1/runs/fin-busy", json={"project": "pf", "status": "done?"}).status_code == 422
    assert c.put("/v1/runs/fin-done", json={"project": "pf"}).status_code == 200
    s = _samples(c.get("/metrics").text)
    assert "losswatch_run_finished" not in s or not s["losswatch_run_finished"]


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_the_spike_rate_is_a_per_run_series(store, service_factory, redis_proc):
    """One spike is a note; the rate of spikes over the last 128 records is what the run exports,
    the same on both stores and equal to the engine's own figure."""
    from losswatch.detectors import Engine
    from losswatch.detectors.types import Record

    env = {} if store == "memory" else {"LOSSWATCH_STORE": redis_proc.url}
    c = client(service_factory(env=env).url)
    r = random.Random(5)
    recs = [{"step": s, "loss": 3.0 * math.exp(-s / 200) + 1.0 + r.gauss(0, 0.01)} for s in range(300)]
    for s in (230, 250, 270, 290):  # four spikes, each undoing most of the progress
        recs[s]["loss"] = 3.9
    assert post_records(c, "spiky", recs[:150]).status_code == 200
    assert post_records(c, "spiky", recs[150:]).status_code == 200
    eng = Engine("spiky")
    eng.update_batch([Record(step=d["step"], loss=d["loss"]) for d in recs])
    assert eng.spike_rate == 4 / 128
    s = _samples(c.get("/metrics").text)
    assert _one(s, "losswatch_run_spike_rate", run="spiky") == eng.spike_rate
    assert c.get("/v1/runs/spiky").json()["spike_rate"] == eng.spike_rate


def test_an_alert_raised_and_resolved_in_one_batch_counts_once(service_factory):
    c = client(service_factory().url)
    recs = [{"step": s, "loss": 1.0 - 0.001 * s} for s in range(40)]
    recs[20]["loss"] = float("nan")  # a NaN episode that recovers within the same batch
    r = post_records(c, "once-1", recs)
    assert r.status_code == 200
    ids = {a["id"] for a in r.json()["alerts"]}
    assert ids and any(a["resolved_step"] is not None for a in r.json()["alerts"]), r.json()["alerts"]
    s = _samples(c.get("/metrics").text)
    assert sum(x.value for x in s["losswatch_alerts_total"]) == len(ids)


def test_a_503_from_a_store_that_is_down_is_counted_as_503(redis_proc, service_factory):
    c = client(service_factory(env={"LOSSWATCH_STORE": redis_proc.url}).url)
    assert post_records(c, "code-1", [{"step": 0, "loss": 1.0}]).status_code == 200
    redis_proc.kill9()
    try:
        assert post_records(c, "code-1", [{"step": 1, "loss": 1.0}]).status_code == 503
        s = _samples(c.get("/metrics").text)
    finally:
        redis_proc.start()
    assert _one(s, "losswatch_ingest_requests_total", code="503") == 1
    assert _one(s, "losswatch_ingest_requests_total", code="200") == 1
    assert not [x for x in s["losswatch_ingest_requests_total"] if x.labels["code"] == "500"]


def test_the_per_run_series_are_a_collector_of_the_scrape_being_rendered():
    # in-process: the collector yields the runs handed to render(), only during that rendering,
    # and its names are registered, so a clashing metric is refused
    import asyncio

    from prometheus_client import Gauge, generate_latest
    from prometheus_client.registry import DuplicateTimeseries

    from losswatch.service.metrics import ServiceMetrics
    from losswatch.service.stores.base import RunSummary

    m = ServiceMetrics()
    m.request(200)

    async def scrape(run_id: str) -> bytes:
        await asyncio.sleep(0)
        return m.render([RunSummary(run_id, "p", last={"loss": float("nan")}, last_step=7)], True)

    async def both() -> list[bytes]:
        return await asyncio.gather(scrape("a"), scrape("b"))

    a, b = (_samples(t.decode()) for t in asyncio.run(both()))
    assert math.isnan(_one(a, "losswatch_run_loss", run="a", project="p"))
    assert _one(b, "losswatch_run_step", run="b", project="p") == 7
    assert [s.labels["run"] for s in a["losswatch_run_step"]] == ["a"]
    assert _one(a, "losswatch_ingest_requests_total", code="200") == 1
    assert _one(a, "losswatch_store_up") == 1
    outside = _samples(generate_latest(m.registry).decode())
    assert "losswatch_store_up" not in outside and "losswatch_ingest_requests_total" in outside
    with pytest.raises(DuplicateTimeseries):
        Gauge("losswatch_store_up", "a clash", registry=m.registry)
