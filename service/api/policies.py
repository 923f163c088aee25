"""/v1/policies: record and query the LR policy database over HTTP.

The entries live in the service's store (:mod:`losswatch.service.lr.policy_store`: the memory
store's dict, or Redis, so every replica serves the same); the offline ``losswatch policies``
keeps its own SQLite file. Entries belong to a
project: one written here belongs to the writer's project (the token's, or ?project= / the
entry's "project" for a token of several; with auth off the one named, else "default"). A token
reads its projects' entries and the public ones (the seeded recipes), deletes only its projects'
ones; public entries are read-only here. Another project's entry answers 404, as if it did not
exist. A store failure is a 503 with Retry-After, as on the run endpoints.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Body, HTTPException, Path, Query

from ..auth import Scope
from ..lr.policy_db import SQL_INT_MAX, PolicyEntry
from .deps import PoliciesDep, ScopeDep
from .models import LABEL_PATTERN, ErrorOut

router = APIRouter(prefix="/v1/policies", tags=["policies"])

MAX_ENTRIES_PER_POST = 1000
# integer parameters are bounded by SQL_INT_MAX (what the CLI's SQLite file holds): a 422 beyond
NOT_FOUND = {404: {"model": ErrorOut, "description": "no such entry visible to this token"}}


def _filters(scope: Scope, model_family: str | None, dataset: str | None, optimizer: str | None,
             batch_size: int | None, max_steps: int | None, metric: str | None = None) -> dict[str, Any]:
    return {"model_family": model_family, "dataset": dataset, "optimizer": optimizer, "batch_size": batch_size,
            "max_steps": max_steps, "metric": metric, "projects": scope.projects}


@router.get("", summary="List policy entries (filter by task, step budget, policy name, source)")
async def list_policies(scope: ScopeDep, policies: PoliciesDep,
                  model_family: str | None = None, dataset: str | None = None, optimizer: str | None = None,
                  batch_size: int | None = Query(None, ge=1, le=SQL_INT_MAX),
                  max_steps: int | None = Query(None, ge=0, le=SQL_INT_MAX),
                  policy_name: str | None = None, source: str | None = None,
                  limit: int = Query(1000, ge=1, le=100_000)) -> dict[str, Any]:
    f = _filters(scope, model_family, dataset, optimizer, batch_size, max_steps)
    rows = await policies.list(limit=limit, policy_name=policy_name, source=source, **f)
    return {"policies": [e.to_dict() for e in rows]}


@router.get("/best", summary="The best non-diverged policy for a task, optionally under a step budget",
            responses={404: {"model": ErrorOut, "description": "no entry matches the task"}})
async def best_policy(scope: ScopeDep, policies: PoliciesDep,
                model_family: str | None = None, dataset: str | None = None, optimizer: str | None = None,
                batch_size: int | None = Query(None, ge=1, le=SQL_INT_MAX),
                max_steps: int | None = Query(None, ge=0, le=SQL_INT_MAX),
                metric: str | None = None) -> dict[str, Any]:
    e = await policies.best(**_filters(scope, model_family, dataset, optimizer, batch_size, max_steps, metric))
    if e is None:
        raise HTTPException(404, "no policy entry matches this task" + (f" within {max_steps} steps" if max_steps else ""))
    return e.to_dict()


def _owner(scope: Scope, query_project: str | None, entries: list[Any]) -> str:
    """The project the posted entries will belong to: ?project= and the entries' "project"
    fields must agree; then the token decides (403 for a project it does not cover)."""
    named = {query_project} if query_project is not None else set()
    named |= {e["project"] for e in entries if isinstance(e, dict) and isinstance(e.get("project"), str)}
    if len(named) > 1:
        raise HTTPException(422, f"the entries name different projects: {sorted(named)[:5]}")
    return scope.project(next(iter(named), None))


@router.post("", status_code=201, summary="Add one entry, or {'entries': [...]} (all or nothing)",
             description="The body is one policy entry (task fields, policy, metrics...) or "
                         "{\"entries\": [entry, ...]}. The entries belong to the writer's project.",
             responses={403: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut}})
async def add_policies(scope: ScopeDep, policies: PoliciesDep, body: dict[str, Any] = Body(...),
                 project: Optional[str] = Query(None, pattern=LABEL_PATTERN,
                                                description="the entries' project (a token of several)")
                 ) -> dict[str, Any]:
    if "entries" in body:
        entries = body["entries"]
        if not isinstance(entries, list) or not entries:
            raise HTTPException(422, "entries must be a non-empty list of policy entries")
        if len(entries) > MAX_ENTRIES_PER_POST:
            raise HTTPException(413, f"at most {MAX_ENTRIES_PER_POST} entries per request, got {len(entries)}")
    else:
        entries = [body]
    try:
        parsed = [PolicyEntry.from_dict(e) for e in entries]
    except ValueError as e:
        which = "" if len(entries) == 1 else " (nothing was added)"
        raise HTTPException(422, f"{e}{which}") from None
    owner = _owner(scope, project, entries)
    for e in parsed:
        e.project = owner
    return {"added": [e.to_dict() for e in await policies.add_many(parsed)]}


@router.get("/{entry_id}", summary="One entry", responses=NOT_FOUND)
async def get_policy(scope: ScopeDep, policies: PoliciesDep,
               entry_id: int = Path(..., ge=1, le=SQL_INT_MAX)) -> dict[str, Any]:
    e = await policies.get(entry_id, projects=scope.projects)
    if e is None:
        raise HTTPException(404, f"no policy entry {entry_id}")
    return e.to_dict()


@router.delete("/{entry_id}", summary="Delete one entry of the caller's project",
               responses={**NOT_FOUND, 403: {"model": ErrorOut, "description": "a public entry (read-only)"}})
async def delete_policy(scope: ScopeDep, policies: PoliciesDep,
                  entry_id: int = Path(..., ge=1, le=SQL_INT_MAX)) -> dict[str, Any]:
    e = await policies.get(entry_id, projects=scope.projects)
    if e is None:
        raise HTTPException(404, f"no policy entry {entry_id}")
    if e.project is None:
        raise HTTPException(403, f"policy entry {entry_id} is a public recipe: read-only")
    if not await policies.delete(entry_id, projects=frozenset([e.project])):
        raise HTTPException(404, f"no policy entry {entry_id}")  # deleted meanwhile
    return {"deleted": entry_id}
