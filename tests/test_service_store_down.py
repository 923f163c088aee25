"""A dead store through real HTTP: 503 with Retry-After (never a 500), /readyz says why, /healthz
stays up, /metrics still answers with losswatch_store_up 0; once Redis is back nothing was lost."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from service_helpers import client, post_records


def _store_up(text: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "losswatch_store_up":
                return s.value
    raise AssertionError("no losswatch_store_up")


def test_redis_down_gives_503_and_loses_nothing(redis_proc, service_factory):
    svc = service_factory(env={"LOSSWATCH_STORE": redis_proc.url, "LOSSWATCH_RETRY_AFTER": "3"})
    c = client(svc.url)
    recs = [{"step": s, "loss": 2.0 - 0.01 * s} for s in range(30)]
    assert post_records(c, "down-1", recs[:20]).status_code == 200
    redis_proc.kill9()
    try:
        r = post_records(c, "down-1", recs[20:])
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "3"
        for path in ("/v1/runs/down-1", "/v1/runs", "/v1/alerts", "/v1/runs/down-1/steps"):
            r = c.get(path)
            assert r.status_code == 503 and r.headers.get("retry-after"), (path, r.status_code, r.text)
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False and r.json()["reason"]
        assert c.get("/healthz").status_code == 200
        m = c.get("/metrics")
        assert m.status_code == 200 and _store_up(m.text) == 0
    finally:
        # the restarted server has no data (no persistence in this fixture): restart with the same
        # port, and check that the service recovers by itself
        redis_proc.start()
    assert c.get("/readyz").status_code == 200
    assert _store_up(c.get("/metrics").text) == 1
    # the refused batch can simply be sent again
    assert post_records(c, "down-1", recs[20:]).status_code == 200
