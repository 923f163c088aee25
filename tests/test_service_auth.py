"""Token auth through real HTTP: a token sees and writes only its projects; /healthz stays open."""

from __future__ import annotations

import pytest

from service_helpers import client, post_records

TOKENS = "tokA=projA;tokB=projB;tokAB=projA,projB"
RECS = [{"step": s, "loss": 1.0} for s in range(5)]


@pytest.fixture(scope="module")
def secured():
    from fixtures.service_proc import ServiceProc

    p = ServiceProc(env={"LOSSWATCH_TOKENS": TOKENS, "LOSSWATCH_HOST": "127.0.0.1"})
    try:
        a, b = client(p.url, "tokA"), client(p.url, "tokB")
        assert post_records(a, "run-a", RECS).status_code == 200        # project from the token
        assert b.put("/v1/runs/run-b", json={"project": "projB"}).status_code == 200
        assert post_records(b, "run-b", RECS).status_code == 200
        yield p
    finally:
        p.stop()


def test_healthz_open_everything_else_needs_a_token(secured):
    anon = client(secured.url)
    assert anon.get("/healthz").status_code == 200
    for method, path in (("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v1/runs"),
                         ("GET", "/v1/runs/run-a"), ("GET", "/v1/alerts"), ("POST", "/v1/runs/run-a/steps")):
        r = anon.request(method, path, json={"records": []})
        assert r.status_code == 401, (path, r.status_code)
        assert r.headers.get("www-authenticate") == "Bearer"
    bad = client(secured.url, "wrong")
    assert bad.get("/v1/runs").status_code == 401
    # the spec and the docs too
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert anon.get(path).status_code == 401, path
        assert bad.get(path).status_code == 401, path
    assert client(secured.url, "tokB").get("/openapi.json").json()["info"]["title"] == "losswatch"


def test_token_cannot_read_other_project(secured):
    a = client(secured.url, "tokA")
    assert a.get("/v1/runs/run-a").json()["project"] == "projA"
    assert [r["run_id"] for r in a.get("/v1/runs").json()["runs"]] == ["run-a"]
    for path in ("/v1/runs/run-b", "/v1/runs/run-b/steps", "/v1/runs/run-b/alerts"):
        assert a.get(path).status_code == 404, path
    assert a.get("/v1/runs", params={"project": "projB"}).json()["runs"] == []
    metrics = a.get("/metrics").text
    assert 'run="run-a"' in metrics and 'run="run-b"' not in metrics
    both = client(secured.url, "tokAB")
    assert {r["run_id"] for r in both.get("/v1/runs").json()["runs"]} == {"run-a", "run-b"}


def test_token_cannot_write_other_project(secured):
    a, b = client(secured.url, "tokA"), client(secured.url, "tokB")
    before = b.get("/v1/runs/run-b/steps").json()["series"]
    # naming a project the token does not cover: 403, whether or not the run exists there
    assert post_records(a, "run-new", RECS, project="projB").status_code == 403
    assert a.put("/v1/runs/run-new2", json={"project": "projB"}).status_code == 403
    for path in ("/v1/runs/run-b", "/v1/runs/run-nope"):
        assert a.get(path, params={"project": "projB"}).status_code == 403
    # an action for run-b of its own project, which does not exist: 404 as for any missing run
    assert a.post("/v1/runs/run-b/actions", json={"step": 1, "action": {"type": "stop"},
                                                  "applied": True}).status_code == 404
    # the same run id in its own project is its own run: B's run stays as it was
    assert post_records(a, "run-b", [{"step": 100, "loss": 5.0}]).status_code == 200
    assert a.put("/v1/runs/run-b", json={"task": "mine"}).status_code == 200
    assert a.get("/v1/runs/run-b").json()["project"] == "projA"
    assert b.get("/v1/runs/run-b/steps").json()["series"] == before
    assert b.get("/v1/runs/run-b").json()["meta"] == {"project": "projB"}
    assert b.get("/v1/runs/run-new").status_code == 404


def test_multi_project_token_must_name_the_project(secured):
    ab = client(secured.url, "tokAB")
    r = post_records(ab, "run-ab", RECS)
    assert r.status_code == 422 and "project" in r.text
    for path in ("/v1/runs/run-a", "/v1/runs/run-a/steps", "/v1/runs/run-a/alerts"):
        r = ab.get(path)
        assert r.status_code == 422 and "?project=" in r.text, path
    assert post_records(ab, "run-ab", RECS, project="projB").status_code == 200
    assert client(secured.url, "tokB").get("/v1/runs/run-ab").status_code == 200
    assert client(secured.url, "tokA").get("/v1/runs/run-ab").status_code == 404
    assert ab.get("/v1/runs/run-ab", params={"project": "projB"}).json()["n_steps"] == len(RECS)
    # ?project= and the body must agree
    r = ab.put("/v1/runs/run-ab", params={"project": "projA"}, json={"project": "projB"})
    assert r.status_code == 422 and "disagree" in r.text
