"""Bad input through real HTTP: every case gets a clear 4xx (never a 5xx) and nothing stored is lost."""

from __future__ import annotations

import json

import pytest

from service_helpers import client, post_records

GOOD = [{"step": s, "loss": 2.0 - 0.01 * s, "grad_norm": 1.0, "lr": 1e-3} for s in range(20)]

BAD_BODIES = [
    # (label, raw body, expected status, a word the error must contain)
    ("malformed json", b'{"records": [{"step": 1,', 422, "malformed"),
    ("not utf-8", b'{"records": [{"step": 1, "loss": "\xff\xfe"}]}', 422, "JSON"),
    ("empty body", b"", 422, "malformed"),
    ("list body", b'[{"step": 1}]', 422, "object"),
    ("records not a list", b'{"records": {"step": 1}}', 422, "list"),
    ("unknown body field", b'{"records": [], "oops": 1}', 422, "oops"),
    ("record not an object", b'{"records": [1]}', 422, "object"),
    ("missing step", b'{"records": [{"loss": 1.0}]}', 422, "step"),
    ("negative step", b'{"records": [{"step": -1}]}', 422, "step"),
    ("float step", b'{"records": [{"step": 1.5}]}', 422, "step"),
    ("integral float step past 2^63-1", b'{"records": [{"step": 9223372036854775807.0}]}', 422, "step"),
    ("string step", b'{"records": [{"step": "1"}]}', 422, "step"),
    ("bool step", b'{"records": [{"step": true}]}', 422, "step"),
    ("huge step", b'{"records": [{"step": 99999999999999999999999}]}', 422, "step"),
    ("string loss", b'{"records": [{"step": 1, "loss": "high"}]}', 422, "loss"),
    ("bool loss", b'{"records": [{"step": 1, "loss": false}]}', 422, "loss"),
    ("object lr", b'{"records": [{"step": 1, "lr": {"a": 1}}]}', 422, "lr"),
    ("huge int loss", b'{"records": [{"step": 1, "loss": ' + b"9" * 400 + b"}]}", 422, "loss"),
    ("unknown record field", b'{"records": [{"step": 1, "los": 1.0}]}', 422, "los"),
    ("bad extra", b'{"records": [{"step": 1, "extra": [1, 2]}]}', 422, "extra"),
    ("nan ts", b'{"records": [{"step": 1, "ts": NaN}]}', 422, "ts"),
    ("bad project", b'{"records": [], "project": "a b"}', 422, "project"),
    ("deep nesting", b'{"records": [{"step": 1, "extra": ' + b"[" * 100000 + b"]" * 100000 + b"}]}", 422, ""),
]


@pytest.fixture
def seeded(service_proc):
    """A run with stored steps that every bad request must leave untouched."""
    c = client(service_proc)
    run = "keep-1"
    if c.get(f"/v1/runs/{run}").status_code == 404:
        assert post_records(c, run, GOOD).status_code == 200
    before = c.get(f"/v1/runs/{run}/steps").json()["series"]
    return c, run, before


@pytest.mark.parametrize("label,body,status,word", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_get_4xx_and_lose_nothing(seeded, label, body, status, word):
    c, run, before = seeded
    r = c.post(f"/v1/runs/{run}/steps", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert word.lower() in r.text.lower()
    assert c.get(f"/v1/runs/{run}/steps").json()["series"] == before


def test_422_names_field_index_and_reason(seeded):
    c, run, before = seeded
    recs = [{"step": 100, "loss": 1.0}, {"step": 101, "loss": "oops"}, {"step": 102, "grad_norm": True}]
    r = post_records(c, run, recs)
    assert r.status_code == 422
    errs = r.json()["detail"]
    assert [(e["index"], e["field"]) for e in errs] == [(1, "loss"), (2, "grad_norm")]
    assert all(e["msg"] for e in errs)
    # all or nothing: the good record 100 of the refused batch was not stored either
    assert c.get(f"/v1/runs/{run}/steps").json()["series"] == before


def test_limits_413_name_the_limit(service_factory):
    svc = service_factory(env={"LOSSWATCH_MAX_BATCH_RECORDS": "100", "LOSSWATCH_MAX_BODY_BYTES": "20000"})
    c = client(svc.url)
    assert post_records(c, "lim-1", GOOD).status_code == 200
    r = post_records(c, "lim-1", [{"step": 1000 + s} for s in range(101)])
    assert r.status_code == 413 and "100" in r.text and "LOSSWATCH_MAX_BATCH_RECORDS" in r.text
    big = json.dumps({"records": [{"step": 5000 + s, "loss": 1.0, "extra": {"pad": 1.0}} for s in range(99)]})
    big = big.replace('"records"', '"records"' + " " * 20000, 1)
    r = c.post("/v1/runs/lim-1/steps", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "20000" in r.text and "LOSSWATCH_MAX_BODY_BYTES" in r.text

    # a chunked body (no Content-Length) over the limit is refused too
    def chunks():
        yield b'{"records": ['
        for _ in range(2000):
            yield b'{"step": 1},'
        yield b'{"step": 2}]}'

    r = c.post("/v1/runs/lim-1/steps", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert c.get("/v1/runs/lim-1").json()["n_steps"] == len(GOOD)


@pytest.mark.parametrize("method, path", [("PUT", "/v1/runs/lim-2"), ("POST", "/v1/runs/lim-2/actions"),
                                          ("POST", "/v1/policies")])
def test_a_chunked_body_over_the_limit_is_413_on_every_endpoint(service_factory, tmp_path, method, path):
    svc = service_factory(env={"LOSSWATCH_MAX_BODY_BYTES": "20000",
                               "LOSSWATCH_POLICY_DB": str(tmp_path / "p.sqlite")})
    c = client(svc.url)
    assert c.put("/v1/runs/lim-2", json={"task": "t"}).status_code == 200

    def chunks():  # no Content-Length: only counting the stream can tell
        yield b'{"notes": "'
        for _ in range(3000):
            yield b"0123456789"
        yield b'"}'

    r = c.request(method, path, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert "LOSSWATCH_MAX_BODY_BYTES" in r.text
    assert c.get("/v1/runs/lim-2").json()["meta"] == {"task": "t"}


def test_an_integral_float_step_is_an_integer(service_proc):
    """JSON Schema's "integer" (the published record schema) includes 2957.0."""
    c = client(service_proc)
    r = c.post("/v1/runs/intf-1/steps", content=b'{"records": [{"step": 2957.0, "loss": 1.0}, {"step": 2958}]}',
               headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    assert c.get("/v1/runs/intf-1/steps").json()["series"]["step"] == [2957, 2958]
    r = c.post("/v1/runs/intf-1/actions", json={"step": 2958.0, "action": {"type": "none"}, "applied": True})
    assert r.status_code == 201 and r.json()["step"] == 2958


@pytest.mark.parametrize("action", [{}, {"type": "launch"}, {"factor": 0.5}])
def test_an_action_without_a_known_type_is_422_as_the_spec_says(service_proc, action):
    c = client(service_proc)
    assert post_records(c, "act-1", GOOD[:2]).status_code == 200
    spec = c.get("/openapi.json").json()["components"]["schemas"]
    assert "type" in spec["ActionIn"]["required"]
    r = c.post("/v1/runs/act-1/actions", json={"step": 1, "action": action, "applied": True})
    assert r.status_code == 422, r.text
    assert ["body", "action", "type"] == r.json()["detail"][0]["loc"]
    assert c.get("/v1/runs/act-1/alerts").json()["actions"] == []


@pytest.mark.parametrize("run_id", ["a b", "x" * 129, "run{x}", 'r"1', "r\\n", "über"])
def test_bad_run_ids_are_refused(service_proc, run_id):
    c = client(service_proc)
    r = post_records(c, run_id, GOOD[:2])
    assert r.status_code in (404, 422), r.text    # 404 when the id cannot even form a route
    assert c.put(f"/v1/runs/{run_id}", json={}).status_code in (404, 422)


def test_unknown_runs_and_alerts_are_404(service_proc):
    c = client(service_proc)
    for path in ("/v1/runs/nope-1", "/v1/runs/nope-1/steps", "/v1/runs/nope-1/alerts"):
        r = c.get(path)
        assert r.status_code == 404 and "nope-1" in r.text
    r = c.post("/v1/runs/nope-1/actions", json={"step": 1, "action": {"type": "stop"}, "applied": True})
    assert r.status_code == 404
    assert c.post("/v1/alerts/nope-1:nan:3/ack").status_code == 404


def test_bad_query_and_meta_are_422(service_proc):
    c = client(service_proc)
    assert post_records(c, "q-1", GOOD[:3]).status_code == 200
    for params in ({"start": -1}, {"max_points": 1}, {"start": "x"}):
        assert c.get("/v1/runs/q-1/steps", params=params).status_code == 422
    assert c.get("/v1/runs", params={"health": "sick"}).status_code == 422
    assert c.get("/v1/alerts", params={"kind": "boredom"}).status_code == 422
    assert c.put("/v1/runs/q-1", json={"batch_size": "big"}).status_code == 422
    assert c.put("/v1/runs/q-1", content=b"{", headers={"Content-Type": "application/json"}).status_code == 422
    r = c.post("/v1/runs/q-1/actions", json={"step": 1, "action": {"type": "dance"}, "applied": True})
    assert r.status_code == 422 and "type" in r.text
    assert c.get("/v1/runs/q-1").json()["n_steps"] == 3


def test_each_project_named_is_its_own_run(service_proc):
    c = client(service_proc)
    assert post_records(c, "proj-1", GOOD[:2], project="alpha").status_code == 200
    assert post_records(c, "proj-1", GOOD[2:5], project="beta").status_code == 200
    assert c.get("/v1/runs/proj-1", params={"project": "alpha"}).json()["n_steps"] == 2
    assert c.get("/v1/runs/proj-1", params={"project": "beta"}).json()["n_steps"] == 3
    assert c.get("/v1/runs/proj-1").status_code == 404          # nothing in project "default"
