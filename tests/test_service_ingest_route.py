"""POST /v1/runs/{run_id}/steps is answered by ``IngestRoute``, a pure ASGI route in front of
FastAPI's routing; FastAPI's own route for that path (the one the spec documents, reached under a
root path) must give the same answers byte for byte: status, headers and body, for good batches,
alerts, every kind of refused body, auth failures and a store that is down, and while the process
is loaded the flush hint's header on the same answers.

In-process (the app's own lifespan and store, driven through httpx's ASGI transport) so that the
two routes can be told apart: ``IngestRoute`` is driven with an inner app that fails the test if
a request reaches it."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from losswatch.service.api.steps import IngestRoute
from losswatch.service.app import create_app
from losswatch.service.flush_hint import HEADER
from losswatch.service.settings import Settings

GOOD = {"records": [{"step": s, "loss": 2.0 - 0.01 * s, "grad_norm": 1.0, "lr": 1e-3} for s in range(10)]}
HOT = {"records": [{"step": s, "loss": 2.0 if s < 40 else 50.0 * (s - 38), "grad_norm": 1.0 + s, "lr": 1.0}
                   for s in range(60)]}
NAN = b'{"records": [{"step": 100, "loss": NaN, "grad_norm": "Infinity", "lr": "-inf"}]}'

TOKENS = {"tok": frozenset({"projA", "projB"}), "one": frozenset({"projA"})}
AUTH = {"Authorization": "Bearer tok"}
ONE = {"Authorization": "Bearer one"}

# (path after /v1/runs/, query, headers, body)
CASES = [
    ("r1/steps", "?project=projA", AUTH, json.dumps(GOOD).encode()),
    ("r1/steps", "", ONE, json.dumps(GOOD).encode()),                      # duplicates now
    ("hot/steps", "", ONE, json.dumps(HOT).encode()),                      # alerts
    ("hot/steps", "", ONE, NAN),                                           # bare NaN: the stdlib re-parse
    ("r1/steps", "", ONE, b'{"records": [{"step": 1,'),                    # malformed
    ("r1/steps", "", ONE, b'{"records": [{"step": 1, "loss": "\xff"}]}'),  # not UTF-8
    ("r1/steps", "", ONE, b'{"records": [{"step": -1}, {"step": 2, "los": 1}]}'),
    ("r1/steps", "", ONE, b'{"records": [' + b",".join([b'{"step": 1}'] * 10_001) + b"]}"),  # 413
    ("r1/steps", "", ONE, b'{"records": [], "project": "a b"}'),
    ("bad%20id/steps", "", ONE, json.dumps(GOOD).encode()),
    ("r1/steps", "?project=bad%20name", ONE, json.dumps(GOOD).encode()),
    ("r1/steps", "?project=projA&project=projC", ONE, json.dumps(GOOD).encode()),  # the last one: 403
    ("r1/steps", "?project=projA", ONE, json.dumps({**GOOD, "project": "projB"}).encode()),
    ("r1/steps", "", AUTH, json.dumps(GOOD).encode()),                     # several projects, none named
    ("r1/steps", "", {}, json.dumps(GOOD).encode()),                       # 401 with WWW-Authenticate
    ("r1/steps", "", {"Authorization": "Bearer nope"}, json.dumps(GOOD).encode()),
]
TIMES = re.compile(rb"1[789]\d{8}\.\d+")  # wall-clock timestamps in alerts differ from app to app


async def _refuse(scope, receive, send):
    raise AssertionError(f"IngestRoute passed {scope['method']} {scope['path']} on")


async def _held_post(c: httpx.AsyncClient, url: str, release: asyncio.Event) -> httpx.Response:
    """A POST /steps whose body waits for ``release``: in flight in the service until then."""
    async def body():
        yield b'{"records": ['
        await release.wait()
        yield b'{"step": 0, "loss": 1.0}]}'
    return await c.post(url, content=body(), headers={"Content-Type": "application/json", **ONE})


async def _answers(settings: Settings, mounted: bool, loaded: bool = False) -> list[tuple[int, list, bytes]]:
    """Each case's answer (status, headers, body). ``loaded``: with three POSTs held in flight
    all along, once the answers carry the flush hint (the settings' maximum, where it holds)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        if mounted:  # FastAPI strips the root path and routes to its own POST /v1/runs/{run_id}/steps
            transport = httpx.ASGITransport(app=app, root_path="/mounted")
            prefix = "/mounted/v1/runs/"
        else:
            transport = httpx.ASGITransport(app=IngestRoute(_refuse, service=app))
            prefix = "/v1/runs/"
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://lw") as c:
            release = asyncio.Event()
            held = [asyncio.create_task(_held_post(c, prefix + "held/steps", release)) for _ in range(3 * loaded)]
            if loaded:  # each probe finds the held ones in flight: the hint comes after a window
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while HEADER.lower() not in (await c.post(prefix + "probe/steps", json=GOOD, headers=ONE)).headers:
                    assert loop.time() < deadline, "no flush hint with three POSTs always in flight"
                    await asyncio.sleep(0.05)
            for path, query, headers, body in CASES:
                r = await c.post(prefix + path + query, content=body,
                                 headers={"Content-Type": "application/json", **headers})
                assert int(r.headers["content-length"]) == len(r.content)
                # in the order sent (content-length aside: timestamps in alerts may differ in length)
                headers = [(k.decode(), v.decode()) for k, v in r.headers.raw if k.lower() != b"content-length"]
                out.append((r.status_code, headers, TIMES.sub(b"0", r.content)))
            release.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200] * len(held)
        return out


@pytest.mark.parametrize("store", ["memory://", "redis://127.0.0.1:1/0"], ids=["memory", "store down"])
def test_ingest_route_answers_as_fastapis_route_does(store):
    settings = Settings(tokens=TOKENS, store_url=store, store_timeout_ms=300)
    fast = asyncio.run(_answers(settings, mounted=False))
    routed = asyncio.run(_answers(settings, mounted=True))
    for case, a, b in zip(CASES, fast, routed):
        assert a == b, case[:3]
    statuses = [a[0] for a in fast]
    if store == "memory://":
        assert statuses == [200, 200, 200, 200, 422, 422, 422, 413, 422, 422, 422, 403, 422, 422, 401, 401]
        assert json.loads(fast[1][2])["duplicates"] == 10 and json.loads(fast[2][2])["alerts"]
        assert ("www-authenticate", "Bearer") in fast[14][1]
    else:  # what the store is not needed for is answered as above; the rest is a 503 with Retry-After
        assert statuses.count(503) == 4 and all(("retry-after", "2") in a[1] for a in fast if a[0] == 503)


def test_ingest_route_sends_the_flush_hint_as_fastapis_route_does():
    settings = Settings(tokens=TOKENS, store_url="memory://", flush_hint_inflight=1, flush_hint_max=1)
    fast = asyncio.run(_answers(settings, mounted=False, loaded=True))
    routed = asyncio.run(_answers(settings, mounted=True, loaded=True))
    for case, a, b in zip(CASES, fast, routed):
        assert a == b, case[:3]
    # on accepted batches only: a refused one is not to be sent again, later or not
    assert [(status, (HEADER.lower(), "1") in headers) for status, headers, _ in fast] == [
        (status, status == 200) for status, _, _ in fast]
    assert [a[0] for a in fast].count(200) == 4
