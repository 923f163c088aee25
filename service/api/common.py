"""Helpers the routers share: JSON responses that keep NaN visible, error answers, the project a
request acts in, run look-up."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import HTTPException, Path, Query
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from losswatch.detectors.wire import VALUE_FIELDS, encode_floats

from ..auth import Scope
from ..ingest import LABEL_RULE
from ..stores.base import RunSummary, Store, StoreUnavailable
from .models import LABEL_PATTERN

RunIdPath = Path(..., pattern=LABEL_PATTERN, description=LABEL_RULE)
PROJECT_RULE = ("the run's project (a run is named by project and run id): needed with a token of several "
                "projects; else the token's project, or with auth off `default`")
ProjectQuery = Query(None, pattern=LABEL_PATTERN, description=PROJECT_RULE)


def json_bytes(obj: Any) -> bytes:
    """``obj`` as JSON, orjson-encoded; ``obj`` must already be JSON-safe (see :func:`encode_floats`).

    orjson refuses integers beyond 64 bits (which a client may put in free-form metadata): the
    standard library writes those."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response of :func:`json_bytes`."""
    return Response(json_bytes(obj), status_code=status, media_type="application/json", headers=headers)


def http_error_response(exc: StarletteHTTPException) -> Response:
    """The answer to an HTTPException, ``{"detail": ...}``: FastAPI's 400 "error parsing the body"
    (not JSON, not UTF-8) is a 422 like every other bad body, and every 422 has the one shape
    FastAPI documents, a list of {loc, msg, type}."""
    detail, status = exc.detail, exc.status_code
    if status == 400:
        status = 422
    if status == 422 and isinstance(detail, str):
        detail = [{"loc": ["request"], "msg": detail, "type": "value_error"}]
    return Response(orjson.dumps({"detail": detail}, default=str), status_code=status,
                    media_type="application/json", headers=getattr(exc, "headers", None))


def store_down_response(exc: StoreUnavailable, retry_after: int) -> Response:
    """The 503 for a store that is down, busy or too slow, with Retry-After (the store's own
    figure when it has one, else ``retry_after``)."""
    return Response(orjson.dumps({"detail": f"store unavailable: {exc}"}), status_code=503,
                    media_type="application/json", headers={"Retry-After": str(exc.retry_after or retry_after)})


def run_dict(s: RunSummary) -> dict[str, Any]:
    return encode_floats({
        "run_id": s.run_id, "project": s.project, "meta": s.meta, "created_at": s.created_at,
        "last_seen": s.last_seen, "last_step": s.last_step, "n_steps": s.n_steps,
        "duplicates": s.duplicates, "out_of_order": s.out_of_order,
        "last": {k: s.last.get(k) for k in VALUE_FIELDS},
        "spike_rate": s.last.get("spike_rate"),
        "health": s.health, "active_alerts": s.active_alerts, "recommendation": s.recommendation,
        "attempt": s.attempt, "attempts": s.attempts,
    })


def request_project(scope: Scope, query: str | None, body: str | None = None) -> str:
    """The project a request acts in: what it names (``?project=``, the body's ``"project"``;
    they must agree) decided by the caller's scope (:meth:`Scope.project`)."""
    if query is not None and body is not None and query != body:
        raise HTTPException(422, [{"loc": ["query", "project"], "type": "value_error",
                                   "msg": f"?project={query!r} and the body's project {body!r} disagree"}])
    return scope.project(query if query is not None else body)


async def visible_run(store: Store, project: str, run_id: str) -> RunSummary:
    """The run (project, run_id), else 404: a run id another project uses answers the same."""
    s = await store.get_run(run_id, project=project)
    if s is None:
        raise HTTPException(404, no_run(project, run_id))
    return s


def no_run(project: str, run_id: str) -> str:
    return f"no run {run_id!r} in project {project!r}"
