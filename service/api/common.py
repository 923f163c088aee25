"""Helpers the routers share: JSON responses that keep NaN visible, run look-up under a scope."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import HTTPException, Path, Request
from fastapi.responses import Response

from ..auth import Scope
from ..ingest import json_safe
from ..stores.base import RunSummary, Store
from .models import LABEL_PATTERN

RunIdPath = Path(..., pattern=LABEL_PATTERN, description="1-128 characters of [A-Za-z0-9._:-]")


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
        "last": {k: s.last.get(k) for k in ("loss", "grad_norm", "lr", "val_loss")},
        "health": s.health, "active_alerts": s.active_alerts, "recommendation": s.recommendation,
    })


async def visible_run(store: Store, run_id: str, scope: Scope) -> RunSummary:
    """The run if it exists and the caller may see it, else 404 (same answer either way)."""
    s = await store.get_run(run_id)
    if s is None or not scope.allows(s.project):
        raise HTTPException(404, f"no run {run_id!r}")
    return s
