"""The service on Redis when Redis goes away: ingest and reads answer 503 with Retry-After, /readyz
says why, and nothing is lost once Redis is back (the real client keeps its data and retries)."""

from __future__ import annotations

import time

from service_helpers import client, post_records
from test_redis_store import curve
from test_replicas import wire


def test_redis_down_gives_503_with_retry_after_and_nothing_is_lost(redis_factory, service_factory):
    srv = redis_factory(appendonly=True, appendfsync="always")
    svc = service_factory(env={"LOSSWATCH_STORE": srv.url, "LOSSWATCH_RETRY_AFTER": "3"})
    c = client(svc.url)
    recs = curve(400, seed=8)
    assert post_records(c, "r", wire(recs[:200])).json()["accepted"] == 200
    srv.kill9()

    r = post_records(c, "r", wire(recs[200:]))
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    assert "unreachable" in r.json()["detail"]
    for path in ("/v1/runs/r/steps", "/v1/runs/r", "/v1/runs", "/v1/runs/r/alerts", "/v1/alerts"):
        r = c.get(path)
        assert r.status_code == 503 and "Retry-After" in r.headers, path
    r = c.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and "unreachable" in body["reason"] and str(srv.port) in body["reason"]
    assert c.get("/healthz").status_code == 200          # alive, just not ready

    srv.start()
    deadline = time.monotonic() + 10
    while c.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "service never became ready again"
        time.sleep(0.1)
    r = post_records(c, "r", wire(recs[150:]))            # the client's retry (overlapping)
    assert r.status_code == 200
    assert (r.json()["accepted"], r.json()["duplicates"]) == (200, 50)
    assert c.get("/v1/runs/r/steps").json()["series"]["step"] == list(range(400))


def test_the_real_client_keeps_its_steps_while_redis_is_down(redis_factory, service_factory, tmp_path):
    """A training loop logs through losswatch.client.Monitor while Redis is down for a while:
    the 503s cost it nothing and every step arrives once Redis is back."""
    from losswatch.client import Monitor

    srv = redis_factory(appendonly=True, appendfsync="always")
    svc = service_factory(env={"LOSSWATCH_STORE": srv.url, "LOSSWATCH_RETRY_AFTER": "1"})
    recs = curve(300, seed=12)
    mon = Monitor(run_id="train", url=svc.url, project="p", flush_interval=0.05, spool_dir=str(tmp_path))
    try:
        for r in recs[:100]:
            mon.log(r["step"], loss=r["loss"], grad_norm=r["grad_norm"], lr=r["lr"])
        assert mon.flush(10)
        srv.kill9()
        t0 = time.perf_counter()
        for r in recs[100:]:
            mon.log(r["step"], loss=r["loss"], grad_norm=r["grad_norm"], lr=r["lr"])
        assert time.perf_counter() - t0 < 1.0             # logging never waited for the service
        time.sleep(0.5)                                   # some sends fail with 503 meanwhile
        srv.start()
        mon.flush(30)
    finally:
        mon.close()
    steps = client(svc.url).get("/v1/runs/train/steps", params={"project": "p"}).json()["series"]["step"]
    assert steps == list(range(300))
