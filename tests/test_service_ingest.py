"""Ingest through real HTTP: a diverging run end to end, duplicates and out-of-order steps, NaN in
all three encodings, concurrent batches for one run, series read-back and downsampling."""

from __future__ import annotations

import math
import threading

import numpy as np

from service_helpers import client, num, post_records, same


def _diverging(n_ok: int = 300, n_bad: int = 120, seed: int = 0) -> list[dict]:
    """A loss that decays like real training, then blows up (LR far too high): the loss grows
    geometrically with a rising grad-norm."""
    rng = np.random.default_rng(seed)
    recs = []
    for s in range(n_ok):
        loss = 2.0 * math.exp(-s / 120) + 0.5 + 0.02 * rng.standard_normal()
        recs.append({"step": s, "loss": loss, "grad_norm": 1.0 + 0.05 * rng.standard_normal(), "lr": 1e-3})
    base = recs[-1]["loss"]
    for k in range(1, n_bad + 1):
        s = n_ok + k - 1
        recs.append({"step": s, "loss": base * 1.06 ** k, "grad_norm": 1.0 * 1.1 ** k, "lr": 1e-3})
    return recs


def test_diverging_run_raises_alert_and_advice(service_proc):
    c = client(service_proc)
    assert c.put("/v1/runs/div-1", json={"project": "e2e", "task": "toy", "optimizer": "adamw",
                                         "lr_schedule": {"name": "constant", "params": {"lr": 1e-3}}}).status_code == 200
    recs = _diverging()
    seen_alerts = {}
    health = None
    for i in range(0, len(recs), 50):
        r = post_records(c, "div-1", recs[i:i + 50], project="e2e")   # the run is (e2e, div-1)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["accepted"] == len(recs[i:i + 50])
        for a in body["alerts"]:
            seen_alerts[a["id"]] = a
        health = body["health"]
    assert health in ("warning", "critical")
    kinds = {a["kind"] for a in seen_alerts.values()}
    assert kinds & {"divergence", "grad_explosion", "spike"}, kinds
    # no instability alarm during the healthy part (a plateau note as the decay flattens is fair)
    unstable = ("divergence", "spike", "grad_explosion", "nan")
    assert all(a["step"] >= 300 for a in seen_alerts.values() if a["kind"] in unstable), \
        [(a["kind"], a["step"]) for a in seen_alerts.values()]
    e2e = {"project": "e2e"}
    run = c.get("/v1/runs/div-1", params=e2e).json()
    assert run["project"] == "e2e" and run["meta"]["optimizer"] == "adamw"
    # the schedule reached the detectors in the flat form they read
    assert run["meta"]["lr_schedule"] == {"name": "constant", "lr": 1e-3}
    assert run["health"] == health and run["last_step"] == len(recs) - 1
    assert run["recommendation"] is not None and run["recommendation"]["type"] != "none"
    assert run["active_alerts"]
    listed = c.get("/v1/runs/div-1/alerts", params=e2e).json()
    assert {a["id"] for a in listed["alerts"]} == set(seen_alerts)
    across = c.get("/v1/alerts", params={"severity": "critical"}).json()["alerts"]
    assert all(a["severity"] == "critical" for a in across)
    # acknowledging keeps the alert and marks it
    aid = next(iter(seen_alerts))
    ack = c.post(f"/v1/alerts/{aid}/ack", params=e2e)
    assert ack.status_code == 200 and ack.json()["acknowledged"] is True
    assert next(a for a in c.get("/v1/runs/div-1/alerts", params=e2e).json()["alerts"]
                if a["id"] == aid)["acknowledged"]


def test_duplicates_and_out_of_order(service_proc):
    c = client(service_proc)
    r = post_records(c, "dup-1", [{"step": s, "loss": 1.0 + s} for s in (0, 1, 2, 5, 6)])
    assert r.json()["accepted"] == 5
    # a repeat of stored steps (with other values) and a repeat inside the batch
    r = post_records(c, "dup-1", [{"step": 2, "loss": 99.0}, {"step": 7, "loss": 8.0}, {"step": 7, "loss": 9.0}])
    b = r.json()
    assert (b["accepted"], b["duplicates"], b["out_of_order"]) == (1, 2, 0)
    # lower steps not seen yet: stored in order, counted as out of order
    r = post_records(c, "dup-1", [{"step": 4, "loss": 5.0}, {"step": 3, "loss": 4.0}, {"step": 8, "loss": 9.0}])
    b = r.json()
    assert (b["accepted"], b["duplicates"], b["out_of_order"]) == (3, 0, 2)
    ser = c.get("/v1/runs/dup-1/steps").json()["series"]
    assert ser["step"] == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    # first write wins: the duplicate's 99.0 and 9.0 were not stored
    assert [num(v) for v in ser["loss"]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    run = c.get("/v1/runs/dup-1").json()
    assert run["n_steps"] == 9 and run["duplicates"] == 2 and run["out_of_order"] == 2
    # the whole batch again: all duplicates, nothing changes
    b = post_records(c, "dup-1", [{"step": s} for s in range(9)]).json()
    assert (b["accepted"], b["duplicates"]) == (0, 9)
    assert c.get("/v1/runs/dup-1").json()["n_steps"] == 9


def test_nan_in_all_three_encodings(service_proc):
    c = client(service_proc)
    bodies = [
        '{"records": [{"step": 0, "loss": "NaN", "grad_norm": "Infinity", "lr": "-Infinity"}]}',
        '{"records": [{"step": 1, "loss": NaN, "grad_norm": Infinity, "lr": -Infinity}]}',
        # a finite-looking body orjson parses, then the same values as Python's json writes them
        '{"records": [{"step": 2, "loss": "nan", "grad_norm": "inf", "lr": "-inf", "val_loss": 1.5}]}',
    ]
    for body in bodies:
        r = c.post("/v1/runs/nan-1/steps", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
    ser = c.get("/v1/runs/nan-1/steps").json()["series"]
    assert ser["step"] == [0, 1, 2]
    assert ser["loss"] == ["NaN", "NaN", "NaN"]
    assert ser["grad_norm"] == ["Infinity"] * 3
    assert ser["lr"] == ["-Infinity"] * 3
    assert ser["val_loss"] == [None, None, 1.5]   # not logged stays null, a value stays a value
    run = c.get("/v1/runs/nan-1").json()
    assert run["last"]["loss"] == "NaN"
    # the NaN reached the detectors
    assert run["health"] == "critical"
    assert any(a["kind"] == "nan" for a in run["active_alerts"])


def test_concurrent_batches_for_one_run_store_each_step_once(service_proc):
    c0 = client(service_proc)
    n_threads, per = 8, 400
    # overlapping ranges: every step is sent by two threads
    results = []

    def send(t: int) -> None:
        with client(service_proc) as c:
            lo = (t * per) // 2
            steps = list(range(lo, lo + per))
            for i in range(0, per, 40):
                r = post_records(c, "conc-1", [{"step": s, "loss": 1.0} for s in steps[i:i + 40]])
                assert r.status_code == 200
                results.append(r.json())

    threads = [threading.Thread(target=send, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = n_threads * per
    distinct = (n_threads - 1) * per // 2 + per
    accepted = sum(b["accepted"] for b in results)
    dups = sum(b["duplicates"] for b in results)
    assert accepted == distinct and accepted + dups == sent
    ser = c0.get("/v1/runs/conc-1/steps").json()["series"]
    assert ser["step"] == list(range(distinct))


def test_series_range_and_downsampling_keeps_extremes_and_nan(service_proc):
    c = client(service_proc)
    n = 5000
    recs = [{"step": s, "loss": 1.0 + 0.001 * (s % 7), "grad_norm": 1.0} for s in range(n)]
    recs[1234]["loss"] = 40.0          # a one-step spike
    recs[3210]["loss"] = float("nan")  # a NaN
    recs[4321]["grad_norm"] = 500.0    # a grad-norm burst
    for i in range(0, n, 1000):
        assert post_records(c, "ds-1", recs[i:i + 1000]).status_code == 200
    part = c.get("/v1/runs/ds-1/steps", params={"start": 100, "end": 199}).json()
    assert part["series"]["step"] == list(range(100, 200)) and part["downsampled"] is None
    d = c.get("/v1/runs/ds-1/steps", params={"max_points": 200}).json()
    assert d["total"] == n and d["count"] <= 200
    assert d["downsampled"]["method"] == "minmax"
    steps = d["series"]["step"]
    assert steps == sorted(steps) and {1234, 3210, 4321} <= set(steps)
    by_step = dict(zip(steps, d["series"]["loss"]))
    assert num(by_step[1234]) == 40.0 and by_step[3210] == "NaN"
    # every returned point is a stored record (no averages)
    for s, v in zip(steps, d["series"]["loss"]):
        assert same(num(v), recs[s]["loss"])
