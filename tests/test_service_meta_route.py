"""PUT /v1/runs/{run_id} is answered by ``MetaRoute``, a pure ASGI route in front of FastAPI's
routing, when the request is one FastAPI's route would accept; every other request goes on to
FastAPI with its body as it came. Either way the answers must be FastAPI's route's, byte for
byte (status, headers, body): for new, changed and unchanged metadata, every kind of refused
body, bad names, auth failures, a body over the limit and a store that is down, and while the
process is loaded the flush hint's header on the same answers.

In-process (the app's own lifespan and store, driven through httpx's ASGI transport) so that the
two routes can be told apart: what ``MetaRoute`` passes on is recorded (it is driven inside
``BodyLimit``, as in the app)."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from losswatch.service.api.runs import MetaRoute
from losswatch.service.app import BodyLimit, create_app
from losswatch.service.flush_hint import HEADER
from losswatch.service.settings import Settings
from test_service_ingest_route import AUTH, ONE, TOKENS, _held_post

META = {"optimizer": "adamw", "batch_size": 64, "tags": ["a"], "anything": {"x": [1, 2.5, None]},
        "lr_schedule": {"name": "cosine", "params": {"lr": 3e-4, "total_steps": 1000}},
        "checkpoints": [{"step": 100, "path": "ck/100"}]}
JSON = {"Content-Type": "application/json"}

# (path after /v1/runs/, query, headers, body, passed on to FastAPI)
CASES = [
    ("r1", "?project=projA", {**JSON, **AUTH}, json.dumps(META).encode(), False),          # a new run
    ("r1", "", {**JSON, **ONE}, json.dumps(META).encode(), False),                         # unchanged
    ("r1", "", {**JSON, **ONE}, json.dumps({**META, "status": "finished"}).encode(), False),
    ("r2", "", {**JSON, **ONE}, json.dumps({"project": "projA"}).encode(), False),
    ("r1", "", {"Content-Type": "application/json; charset=utf-8", **ONE}, json.dumps(META).encode(), True),
    ("r1", "", {**JSON, **ONE}, json.dumps({**META, "lr_schedule": {"name": "cosine"}}).encode(), True),
    ("r1", "", {**JSON, **ONE}, json.dumps({"status": "done", "batch_size": 0}).encode(), True),
    ("r1", "", {**JSON, **ONE}, b'{"optimizer": "adamw",', True),                          # malformed
    ("r1", "", {**JSON, **ONE}, b'{"optimizer": "\xff"}', True),                           # not UTF-8
    ("r1", "", {**JSON, **ONE}, b"[]", True),
    ("r1", "", {**JSON, **ONE}, b"", True),
    ("r1", "", {**JSON, **ONE}, b"[" * 100_000 + b"]" * 100_000, True),                   # too deep
    ("r1", "", {**JSON, **ONE}, b'{"x": "' + b"a" * 2_000_000 + b'"}', False),             # 413: BodyLimit
    ("bad%20id", "", {**JSON, **ONE}, json.dumps(META).encode(), False),                   # not this route
    ("r1/x", "", {**JSON, **ONE}, json.dumps(META).encode(), False),
    ("r1", "?project=bad%20name", {**JSON, **ONE}, json.dumps(META).encode(), True),
    ("r1", "?project=projA&project=projC", {**JSON, **ONE}, json.dumps(META).encode(), True),  # 403
    ("r1", "?project=projA", {**JSON, **ONE}, json.dumps({**META, "project": "projB"}).encode(), True),
    ("r1", "", {**JSON, **AUTH}, json.dumps(META).encode(), True),                       # several projects
    ("r1", "", JSON, json.dumps(META).encode(), True),                                   # 401
    ("r1", "", {**JSON, "Authorization": "Bearer nope"}, json.dumps(META).encode(), True),
]
TIMES = re.compile(rb"1[789]\d{8}(\.\d+)?")  # created_at, last_seen: wall-clock times differ from app to app


async def _answers(settings: Settings, mounted: bool, loaded: bool = False) -> tuple[list, list[str]]:
    """Each case's answer (status, headers, body) and the paths MetaRoute passed on."""
    app = create_app(settings)
    passed: list[str] = []

    async def on(scope, receive, send):
        passed.append(scope["path"] + "?" + scope["query_string"].decode())
        await app(scope, receive, send)   # (its own MetaRoute passes it on again)

    async with app.router.lifespan_context(app):
        if mounted:  # FastAPI strips the root path and routes to its own PUT /v1/runs/{run_id}
            transport = httpx.ASGITransport(app=app, root_path="/mounted")
            prefix = "/mounted/v1/runs/"
        else:
            # inside BodyLimit, as in the app's stack
            transport = httpx.ASGITransport(app=BodyLimit(MetaRoute(on, service=app), settings.max_body_bytes))
            prefix = "/v1/runs/"
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://lw") as c:
            release = asyncio.Event()
            held = [asyncio.create_task(_held_post(c, prefix + "held/steps", release)) for _ in range(3 * loaded)]
            if loaded:  # each probe finds the held ones in flight: the hint comes after a window
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while HEADER.lower() not in (await c.put(prefix + "probe", json={}, headers=ONE)).headers:
                    assert loop.time() < deadline, "no flush hint with three POSTs always in flight"
                    await asyncio.sleep(0.05)
                passed.clear()
            for path, query, headers, body, _ in CASES:
                r = await c.put(prefix + path + query, content=body, headers=headers)
                assert int(r.headers["content-length"]) == len(r.content)
                headers = [(k.decode(), v.decode()) for k, v in r.headers.raw if k.lower() != b"content-length"]
                out.append((r.status_code, headers, TIMES.sub(b"0", r.content)))
            release.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200] * len(held)
        return out, [p for p in passed if "held" not in p]


def _passed_on(cases) -> list[str]:
    return [f"/v1/runs/{path.replace('%20', ' ')}?{query.lstrip('?')}" for path, query, _, _, fastapi in cases
            if fastapi or "/" in path or "%" in path]


@pytest.mark.parametrize("store", ["memory://", "redis://127.0.0.1:1/0"], ids=["memory", "store down"])
def test_meta_route_answers_as_fastapis_route_does(store):
    settings = Settings(tokens=TOKENS, store_url=store, store_timeout_ms=300, max_body_bytes=1_000_000)
    fast, passed = asyncio.run(_answers(settings, mounted=False))
    routed, _ = asyncio.run(_answers(settings, mounted=True))
    for case, a, b in zip(CASES, fast, routed):
        assert a == b, case[:3]
    statuses = [a[0] for a in fast]
    if store == "memory://":
        assert statuses == [200, 200, 200, 200, 200, 422, 422, 422, 422, 422, 422, 422, 413, 422, 404,
                            422, 403, 422, 422, 401, 401]
        assert json.loads(fast[2][2])["meta"]["status"] == "finished"
        assert ("www-authenticate", "Bearer") in fast[19][1]
        assert passed == _passed_on(CASES)
    else:  # the store is needed for the accepted ones and the one FastAPI accepts: 503 with Retry-After
        assert statuses.count(503) == 5 and all(("retry-after", "2") in a[1] for a in fast if a[0] == 503)


def test_meta_route_sends_the_flush_hint_as_fastapis_route_does():
    settings = Settings(tokens=TOKENS, store_url="memory://", flush_hint_inflight=1, flush_hint_max=1,
                        max_body_bytes=1_000_000)
    fast, _ = asyncio.run(_answers(settings, mounted=False, loaded=True))
    routed, _ = asyncio.run(_answers(settings, mounted=True, loaded=True))
    for case, a, b in zip(CASES, fast, routed):
        assert a == b, case[:3]
    assert [(status, (HEADER.lower(), "1") in headers) for status, headers, _ in fast] == [
        (status, status == 200) for status, _, _ in fast]
    assert [a[0] for a in fast].count(200) == 5
