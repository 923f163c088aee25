"""Helpers the routers share: JSON responses that keep NaN visible, run look-up and writes under a scope."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import HTTPException, Path, Request
from fastapi.responses import Response

from losswatch.detectors.types import json_safe
from losswatch.detectors.wire import VALUE_FIELDS

from ..auth import Scope
from ..ingest import LABEL_RULE
from ..stores.base import ProjectConflict, RunSummary, Store
from .models import LABEL_PATTERN

RunIdPath = Path(..., pattern=LABEL_PATTERN, description=LABEL_RULE)


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


def run_dict(s: RunSummary) -> dict[str, Any]:
    return json_safe({
        "run_id": s.run_id, "project": s.project, "meta": s.meta, "created_at": s.created_at,
        "last_seen": s.last_seen, "last_step": s.last_step, "n_steps": s.n_steps,
        "duplicates": s.duplicates, "out_of_order": s.out_of_order,
        "last": {k: s.last.get(k) for k in VALUE_FIELDS},
        "spike_rate": s.last.get("spike_rate"),
        "health": s.health, "active_alerts": s.active_alerts, "recommendation": s.recommendation,
    })


async def visible_run(store: Store, run_id: str, scope: Scope) -> RunSummary:
    """The run if it exists and the caller may see it, else 404 (same answer either way)."""
    s = await store.get_run(run_id)
    if s is None or not scope.allows(s.project):
        raise HTTPException(404, f"no run {run_id!r}")
    return s


async def write_project(store: Store, run_id: str, requested: str | None, scope: Scope) -> str | None:
    """The project a write to ``run_id`` passes to the store (PUT /v1/runs/{id}, POST .../steps).

    A scoped token: the run's own project if it exists (404 if the token cannot see it, 409 if
    ``requested`` names another), else the token's choice for a new run (:meth:`Scope.write_project`).
    An unscoped caller skips the look-up: the store raises :class:`ProjectConflict` itself.
    """
    if scope.projects is None:
        return requested
    existing = await store.get_run(run_id)
    if existing is None:
        return scope.write_project(requested)
    if not scope.allows(existing.project):
        raise HTTPException(404, f"no run {run_id!r}")
    if requested is not None and requested != existing.project:
        raise HTTPException(409, f"run {run_id!r} belongs to project {existing.project!r}, not {requested!r}")
    return existing.project


def conflict_error(e: ProjectConflict, scope: Scope) -> HTTPException:
    """The answer to a store's ProjectConflict (a run claimed by another project between the
    look-up and the write): 404 for a scoped token, which must not learn of other projects' runs."""
    if scope.projects is not None:
        return HTTPException(404, f"no run {e.run_id!r}")
    return HTTPException(409, str(e))
