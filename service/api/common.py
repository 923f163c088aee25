"""Helpers the routers share: JSON responses that keep NaN visible, the project a request acts in, run look-up."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import HTTPException, Path, Query, Request
from fastapi.responses import Response

from losswatch.detectors.types import json_safe
from losswatch.detectors.wire import VALUE_FIELDS

from ..auth import Scope
from ..ingest import LABEL_RULE
from ..pipeline import IngestPipeline
from ..stores.base import RunSummary, Store
from .models import LABEL_PATTERN

RunIdPath = Path(..., pattern=LABEL_PATTERN, description=LABEL_RULE)
PROJECT_RULE = ("the run's project (a run is named by project and run id): needed with a token of several "
                "projects; else the token's project, or with auth off `default`")
ProjectQuery = Query(None, pattern=LABEL_PATTERN, description=PROJECT_RULE)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson-encoded response; ``obj`` must already be JSON-safe (see :func:`json_safe`).

    orjson refuses integers beyond 64 bits (which a client may put in free-form metadata): the
    standard library writes those."""
    try:
        body = orjson.dumps(obj)
    except TypeError:
        body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def store_of(request: Request) -> Store:
    return request.app.state.store


def pipeline_of(request: Request) -> IngestPipeline:
    """Where writes that run the detectors go (a batch, a metadata change)."""
    return request.app.state.pipeline


def run_dict(s: RunSummary) -> dict[str, Any]:
    return json_safe({
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
