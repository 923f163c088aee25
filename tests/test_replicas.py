"""Any replica serves any run: two ``losswatch serve --store redis://`` processes on one Redis,
many client threads posting interleaved, conflicting batches of one run to both. Every step is
stored once and the alerts are exactly those of one process (memory store) fed the same run."""

from __future__ import annotations

import random
import threading

from losswatch.detectors.types import encode_float
from service_helpers import client, post_records
from test_redis_store import curve, prefix_rounds


def wire(recs: list[dict]) -> list[dict]:
    """Records as the client sends them (non-finite values as strings)."""
    return [{k: encode_float(v) if type(v) is float else v for k, v in r.items() if v is not None}
            for r in recs]


def alert_view(alerts: list[dict]) -> list[tuple]:
    return sorted((a["id"], a["kind"], a["severity"], a["step"], a["last_step"], a["resolved_step"],
                   a["message"], str(a["action"])) for a in alerts)


def per_run_gauges(text: str, run_id: str) -> list[str]:
    return sorted(line for line in text.splitlines()
                  if line.startswith("losswatch_run_") and f'run="{run_id}"' in line)


def test_two_replicas_store_each_step_once_and_raise_one_process_alerts(redis_proc, service_factory):
    env = {"LOSSWATCH_STORE": redis_proc.url}
    replicas = [service_factory(env=env), service_factory(env=env)]
    single = service_factory()                               # memory store, one process
    recs = curve(3000, seed=21, spike_at=800, nan_at=1700, diverge_at=2600)
    writers = 8
    rounds = prefix_rounds(recs, random.Random(5), writers)
    clients = [client(replicas[k % 2].url) for k in range(writers)]
    totals = {"accepted": 0, "duplicates": 0, "out_of_order": 0, "posted": 0}
    lock = threading.Lock()
    errors: list[str] = []
    barrier = threading.Barrier(writers)

    def writer(k: int) -> None:
        rng = random.Random(k)
        for round_ in rounds:
            barrier.wait()                                   # all threads post round i together
            c = clients[k] if rng.random() < 0.5 else clients[(k + 1) % writers]
            b = round_[k]
            r = post_records(c, "shared", wire(b), project="p")
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")
                continue
            body = r.json()
            with lock:
                for f in ("accepted", "duplicates", "out_of_order"):
                    totals[f] += body[f]
                totals["posted"] += len(b)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    # the replicas really raced: more batch scripts ran than batches were posted (a script that
    # finds the run's state version changed writes nothing and the replica retries)
    st = redis_proc.client().info("commandstats")["cmdstat_evalsha"]
    posts = sum(len(r) for r in rounds)
    assert st["calls"] - st["failed_calls"] > posts
    assert totals["accepted"] == len(recs)
    assert totals["accepted"] + totals["duplicates"] == totals["posted"]
    assert totals["out_of_order"] == 0

    # the reference: one process, the run in order (batch boundaries do not matter to the engine)
    P = {"project": "p"}                                     # the run is (p, shared)
    ref = client(single.url)
    for i in range(0, len(recs), 500):
        assert post_records(ref, "shared", wire(recs[i:i + 500]), project="p").status_code == 200
    want = alert_view(ref.get("/v1/runs/shared/alerts", params=P).json()["alerts"])
    assert want, "the troubled run raised no alert: nothing compared"
    for rep in replicas:
        c = client(rep.url)
        assert alert_view(c.get("/v1/runs/shared/alerts", params=P).json()["alerts"]) == want
        steps = c.get("/v1/runs/shared/steps", params=P).json()["series"]["step"]
        assert steps == list(range(len(recs)))
        run = c.get("/v1/runs/shared", params=P).json()
        assert run["n_steps"] == len(recs) and run["duplicates"] == totals["duplicates"]
    # whatever replica Prometheus scrapes, the per-run figures are the same (read from Redis)
    g = [per_run_gauges(client(rep.url).get("/metrics").text, "shared") for rep in replicas]
    assert g[0] and g[0] == g[1]
    def no_time(lines):
        return [x for x in lines if not x.startswith("losswatch_run_last_seen")]
    assert no_time(g[0]) == no_time(per_run_gauges(ref.get("/metrics").text, "shared"))


def test_a_restarted_replica_continues_the_run_from_redis(redis_proc, service_factory):
    """Stop the only replica half-way; a new process picks the run up with its detector state."""
    env = {"LOSSWATCH_STORE": redis_proc.url}
    recs = curve(3000, seed=4, spike_at=1400, diverge_at=2500)
    a = service_factory(env=env)
    ca = client(a.url)
    for i in range(0, 1500, 100):
        assert post_records(ca, "r", wire(recs[i:i + 100])).status_code == 200
    ca.close()
    a.stop()
    b = service_factory(env=env)
    cb = client(b.url)
    for i in range(1450, 3000, 100):                         # the client resends its last batch too
        assert post_records(cb, "r", wire(recs[i:i + 100])).status_code == 200
    single = service_factory()
    ref = client(single.url)
    for i in range(0, 3000, 100):
        assert post_records(ref, "r", wire(recs[i:i + 100])).status_code == 200
    want = alert_view(ref.get("/v1/runs/r/alerts").json()["alerts"])
    assert want
    assert alert_view(cb.get("/v1/runs/r/alerts").json()["alerts"]) == want
    assert cb.get("/v1/runs/r").json()["n_steps"] == 3000
