"""/v1/policies: record and query the LR policy database over HTTP.

Same database as ``losswatch policies`` (a SQLite file, ``$LOSSWATCH_POLICY_DB``, default
``~/.losswatch/policies.sqlite``; see ``service/lr/policy_db.py`` for why). Policies are shared
knowledge across projects: any valid token may read and add; with auth off, anyone on the
listening interface may. Handlers are plain ``def`` so SQLite runs in FastAPI's thread pool,
never on the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request

from ..auth import Scope, get_scope
from ..lr.policy_db import SQL_INT_MAX, PolicyDB

router = APIRouter(prefix="/v1/policies", tags=["policies"])

MAX_ENTRIES_PER_POST = 1000
# integer parameters are bounded by SQL_INT_MAX: a larger int would be a 500 from SQLite, not a 422


def policy_db(request: Request) -> PolicyDB:
    """The app's policy database, opened on first use."""
    db = getattr(request.app.state, "policy_db", None)
    if db is None:
        try:
            db = PolicyDB()
        except ValueError as e:
            raise HTTPException(503, f"policy database unavailable: {e}") from None
        request.app.state.policy_db = db
    return db


def _filters(model_family: str | None, dataset: str | None, optimizer: str | None, batch_size: int | None,
             max_steps: int | None, metric: str | None = None) -> dict[str, Any]:
    return {"model_family": model_family, "dataset": dataset, "optimizer": optimizer, "batch_size": batch_size,
            "max_steps": max_steps, "metric": metric}


@router.get("", summary="List policy entries (filter by task, step budget, policy name, source)")
def list_policies(model_family: str | None = None, dataset: str | None = None, optimizer: str | None = None,
                  batch_size: int | None = Query(None, ge=1, le=SQL_INT_MAX),
                  max_steps: int | None = Query(None, ge=0, le=SQL_INT_MAX),
                  policy_name: str | None = None, source: str | None = None,
                  limit: int = Query(1000, ge=1, le=100_000),
                  scope: Scope = Depends(get_scope), db: PolicyDB = Depends(policy_db)) -> dict[str, Any]:
    f = _filters(model_family, dataset, optimizer, batch_size, max_steps)
    rows = db.list(limit=limit, policy_name=policy_name, source=source, **f)
    return {"policies": [e.to_dict() for e in rows]}


@router.get("/best", summary="The best non-diverged policy for a task, optionally under a step budget")
def best_policy(model_family: str | None = None, dataset: str | None = None, optimizer: str | None = None,
                batch_size: int | None = Query(None, ge=1, le=SQL_INT_MAX),
                max_steps: int | None = Query(None, ge=0, le=SQL_INT_MAX),
                metric: str | None = None,
                scope: Scope = Depends(get_scope), db: PolicyDB = Depends(policy_db)) -> dict[str, Any]:
    e = db.best(**_filters(model_family, dataset, optimizer, batch_size, max_steps, metric))
    if e is None:
        raise HTTPException(404, "no policy entry matches this task" + (f" within {max_steps} steps" if max_steps else ""))
    return e.to_dict()


@router.post("", status_code=201, summary="Add one entry, or {'entries': [...]} (all or nothing)")
def add_policies(body: Any = Body(...), scope: Scope = Depends(get_scope),
                 db: PolicyDB = Depends(policy_db)) -> dict[str, Any]:
    if isinstance(body, dict) and "entries" in body:
        entries = body["entries"]
        if not isinstance(entries, list) or not entries:
            raise HTTPException(422, "entries must be a non-empty list of policy entries")
        if len(entries) > MAX_ENTRIES_PER_POST:
            raise HTTPException(413, f"at most {MAX_ENTRIES_PER_POST} entries per request, got {len(entries)}")
    else:
        entries = [body]
    try:
        added = db.add_many(entries)
    except ValueError as e:
        which = "" if len(entries) == 1 else " (nothing was added)"
        raise HTTPException(422, f"{e}{which}") from None
    return {"added": [e.to_dict() for e in added]}


@router.get("/{entry_id}", summary="One entry")
def get_policy(entry_id: int = Path(..., ge=1, le=SQL_INT_MAX), scope: Scope = Depends(get_scope),
               db: PolicyDB = Depends(policy_db)) -> dict[str, Any]:
    e = db.get(entry_id)
    if e is None:
        raise HTTPException(404, f"no policy entry {entry_id}")
    return e.to_dict()


@router.delete("/{entry_id}", summary="Delete one entry")
def delete_policy(entry_id: int = Path(..., ge=1, le=SQL_INT_MAX), scope: Scope = Depends(get_scope),
                  db: PolicyDB = Depends(policy_db)) -> dict[str, Any]:
    if not db.delete(entry_id):
        raise HTTPException(404, f"no policy entry {entry_id}")
    return {"deleted": entry_id}
