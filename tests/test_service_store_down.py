"""A dead, stalled, busy or full store through real HTTP: 503 with Retry-After (never a 500, never
after seconds), /readyz says why, /healthz stays up, /metrics still answers with
losswatch_store_up 0; once Redis is back nothing was lost."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest
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


# --- Redis alive but unable to serve: stalled, busy with a script, out of memory ---------------
#
# Each case must answer 503 with Retry-After while Redis is still in that state (so the answer
# did not wait for Redis to recover), /readyz must say why, /metrics must answer with
# losswatch_store_up 0, and afterwards Redis answers PING within a second and a resent batch is
# stored exactly once.

def _fast_ping(srv) -> bool:
    import redis

    return redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=1, socket_connect_timeout=1).ping()


def _refused_while(c, run_id: str, recs: list[dict], why: str) -> None:
    r = post_records(c, run_id, recs)
    assert r.status_code == 503 and r.headers.get("retry-after") == "3", (r.status_code, r.text)
    assert why in r.json()["detail"], r.text
    r = c.put(f"/v1/runs/{run_id}", json={"model": "m"})
    assert r.status_code == 503 and r.headers.get("retry-after") == "3", (r.status_code, r.text)
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["ready"] is False and why in r.json()["reason"], r.text
    assert r.headers.get("retry-after") == "3"
    m = c.get("/metrics")
    assert m.status_code == 200 and _store_up(m.text) == 0


def _stored_once(c, run_id: str, recs: list[dict], before: int) -> None:
    r = post_records(c, run_id, recs)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] + r.json()["duplicates"] == len(recs)
    steps = c.get(f"/v1/runs/{run_id}/steps").json()["series"]["step"]
    assert steps == list(range(before + len(recs)))
    assert c.get("/readyz").status_code == 200


#: the losswatch client's own request timeout: an answer after it is no answer for a client
CLIENT_TIMEOUT = 5.0


def _service(redis_srv, service_factory, env: dict[str, str] | None = None):
    svc = service_factory(env={"LOSSWATCH_STORE": redis_srv.url, "LOSSWATCH_RETRY_AFTER": "3",
                               "LOSSWATCH_STORE_TIMEOUT_MS": "300", **(env or {})})
    c = httpx.Client(base_url=svc.url, timeout=CLIENT_TIMEOUT)
    recs = [{"step": s, "loss": 2.0 - 0.01 * s} for s in range(40)]
    assert post_records(c, "r", recs[:20]).status_code == 200
    return c, recs


@pytest.mark.timeout(90)
def test_a_stalled_redis_gives_a_prompt_503(redis_proc, service_factory):
    """Redis stopped (SIGSTOP: the connection stays open, nothing answers), the way a Redis
    swapping, paused or behind a dead link looks: every answer comes while it is still stopped
    and within the client's timeout, with the default store timeout (it took 10-15 s)."""
    c, recs = _service(redis_proc, service_factory, {"LOSSWATCH_STORE_TIMEOUT_MS": ""})
    os.kill(redis_proc.proc.pid, signal.SIGSTOP)
    try:
        _refused_while(c, "r", recs[20:], "did not answer")
    finally:
        os.kill(redis_proc.proc.pid, signal.SIGCONT)
    assert _fast_ping(redis_proc)
    _stored_once(c, "r", recs[20:], 20)


@pytest.mark.timeout(90)
def test_a_stalled_redis_gives_a_prompt_503_to_requests_queued_for_a_connection(redis_proc, service_factory):
    """One connection, several requests at once, Redis stopped: the one holding the connection
    and those waiting for it all answer 503 while Redis is still stopped. Waiting for a free
    connection may last LOSSWATCH_STORE_QUEUE_MS (here far past the client's timeout) only while
    Redis answers; a stall ends the wait after the store timeout, as a reply's."""
    c, recs = _service(redis_proc, service_factory, {"LOSSWATCH_STORE_TIMEOUT_MS": "",
                                                     "LOSSWATCH_REDIS_CONNECTIONS": "1",
                                                     "LOSSWATCH_STORE_QUEUE_MS": "600000"})
    answers: list[httpx.Response | Exception] = []

    def post(run_id: str) -> None:
        try:
            with client(str(c.base_url)) as own:   # a connection of its own: the requests overlap
                own.timeout = httpx.Timeout(CLIENT_TIMEOUT)
                answers.append(post_records(own, run_id, recs[20:]))
        except Exception as e:  # a client timeout: no answer within the client's timeout
            answers.append(e)

    os.kill(redis_proc.proc.pid, signal.SIGSTOP)
    try:
        posts = [threading.Thread(target=post, args=(f"q{i}",)) for i in range(4)]
        for t in posts:
            t.start()
        for t in posts:
            t.join()
    finally:
        os.kill(redis_proc.proc.pid, signal.SIGCONT)
    assert [getattr(a, "status_code", a) for a in answers] == [503] * 4
    assert all(a.headers.get("retry-after") == "3" for a in answers)
    assert _fast_ping(redis_proc)
    _stored_once(c, "r", recs[20:], 20)


@pytest.mark.timeout(90)
def test_redis_busy_with_a_script_gives_503(redis_proc, service_factory):
    """Another client's script runs past Redis' busy threshold: Redis answers BUSY to everyone
    (a 500 without Retry-After before)."""
    import redis

    c, recs = _service(redis_proc, service_factory)
    admin = redis_proc.client()
    admin.config_set("busy-reply-threshold", 50)
    looping = threading.Thread(target=lambda: _run_until_killed(redis_proc), daemon=True)
    looping.start()
    probe = redis.Redis(host="127.0.0.1", port=redis_proc.port, socket_timeout=5)
    deadline = time.monotonic() + 20
    while True:                           # until Redis itself says BUSY
        try:
            probe.ping()
        except redis.exceptions.ResponseError as e:
            if "BUSY" in str(e) or getattr(e, "status_code", None) == "BUSY":
                break
        assert time.monotonic() < deadline, "Redis never became busy"
    try:
        _refused_while(c, "r", recs[20:], "busy")
    finally:
        probe.script_kill()
        looping.join(timeout=10)
    assert _fast_ping(redis_proc)
    _stored_once(c, "r", recs[20:], 20)


def _run_until_killed(srv) -> None:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=srv.port).eval("while true do end", 0)
    except redis.exceptions.ResponseError:
        pass                              # SCRIPT KILL ends it with an error reply


@pytest.mark.timeout(90)
def test_redis_out_of_memory_gives_503_and_readyz_says_so(redis_proc, service_factory):
    """maxmemory reached with the default noeviction policy: Redis still answers PING but refuses
    every write (a 500 without Retry-After before, and /readyz said ready)."""
    c, recs = _service(redis_proc, service_factory)
    admin = redis_proc.client()
    admin.config_set("maxmemory", 1)
    try:
        _refused_while(c, "r", recs[20:], "out of memory")
        assert c.get("/v1/runs/r").status_code == 200          # reads still work
    finally:
        admin.config_set("maxmemory", 0)
    assert _fast_ping(redis_proc)
    _stored_once(c, "r", recs[20:], 20)
