"""Many runs closing in the same second, through real HTTP into a service on a real Redis whose
connection pool is far smaller than the burst: every step is stored, nothing is left in an unsent
file, every run is marked finished, and the service answered no 503 (docs/storage.md, "A burst
waits its turn")."""

import threading
import warnings

import pytest

from losswatch.client import Monitor
from service_helpers import client

RUNS = 120
STEPS = 250


def _answers_by_code(metrics: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        if family.name == "losswatch_ingest_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[s.labels["code"]] = out.get(s.labels["code"], 0.0) + s.value
    return out


@pytest.mark.timeout(180)
def test_runs_closing_at_once_into_a_small_pool_store_every_step(redis_proc, service_factory, tmp_path):
    # one Redis connection for the whole burst; a 503 would ask for a retry in 60 s, after each
    # run's exit_timeout: any request refused for want of a connection leaves its steps in a file
    svc = service_factory(env={"LOSSWATCH_STORE": redis_proc.url, "LOSSWATCH_REDIS_CONNECTIONS": "1",
                               "LOSSWATCH_STORE_TIMEOUT_MS": "1000", "LOSSWATCH_RETRY_AFTER": "60"})
    spool = tmp_path / "spool"
    # nothing is sent before close(): the metadata, every step and the finished status of each
    # run arrive in the same burst
    mons = [Monitor(run_id=f"burst-{i}", url=svc.url, spool_dir=str(spool / str(i)), flush_interval=3600,
                    batch_size=10_000, timeout=60, exit_timeout=60) for i in range(RUNS)]
    for m in mons:
        for step in range(STEPS):
            m.log(step, loss=2.0 - 0.001 * step, grad_norm=1.0, lr=1e-3)
    assert all(m.stats["sent"] == 0 for m in mons)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        closers = [threading.Thread(target=m.close) for m in mons]
        for t in closers:
            t.start()
        for t in closers:
            t.join()
    assert not list(spool.glob("*/unsent-*.jsonl")), [str(x.message) for x in w]
    assert [m.stats["sent"] for m in mons] == [STEPS] * RUNS
    with client(svc.url) as c:
        for i in range(RUNS):
            assert c.get(f"/v1/runs/burst-{i}/steps").json()["series"]["step"] == list(range(STEPS))
            assert c.get(f"/v1/runs/burst-{i}").json()["meta"]["status"] == "finished"
        codes = _answers_by_code(c.get("/metrics").text)
    assert codes.get("200") == RUNS and "503" not in codes, codes
