"""Runs: PUT metadata, list, one run's summary."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from ..auth import Scope, get_scope
from ..stores.base import ProjectConflict
from .common import RunIdPath, conflict_error, json_response, run_dict, store_of, visible_run, write_project
from .models import LABEL_PATTERN, ErrorOut, Health, RunMetaIn, RunOut, RunsOut

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.put(
    "/{run_id}",
    response_model=RunOut,
    summary="Create a run or replace its metadata",
    description="Metadata (project, task, model, optimizer, batch_size, lr_schedule {name, params}, "
                "tags, anything else) replaces the previous metadata and is passed to the detectors. "
                "The project, once set, cannot change (409).",
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
async def put_run(request: Request, meta: RunMetaIn, run_id: str = RunIdPath,
                  scope: Scope = Depends(get_scope)) -> Response:
    store = store_of(request)
    data = meta.model_dump(mode="json", exclude_none=True)
    if meta.lr_schedule is not None:
        data["lr_schedule"] = meta.lr_schedule.flat()
    requested = await write_project(store, run_id, data.get("project"), scope)
    try:
        s = await store.put_meta(run_id, data, project=requested)
    except ProjectConflict as e:
        raise conflict_error(e, scope) from None
    return json_response(run_dict(s))


@router.get("", response_model=RunsOut, summary="List runs")
async def list_runs(request: Request,
                    project: Optional[str] = Query(None, pattern=LABEL_PATTERN),
                    health: Optional[Health] = None,
                    active_since: Optional[float] = Query(None, description="seconds since the epoch",
                                                          allow_inf_nan=False),
                    scope: Scope = Depends(get_scope)) -> Response:
    projects = scope.projects
    if project is not None:
        projects = frozenset([project]) if scope.allows(project) else frozenset()
    runs = await store_of(request).list_runs(projects=projects, health=health, active_since=active_since)
    return json_response({"runs": [run_dict(s) for s in runs]})


@router.get("/{run_id}", response_model=RunOut, summary="One run: last values, health, active alerts, advice",
            responses={404: {"model": ErrorOut}})
async def get_run(request: Request, run_id: str = RunIdPath, scope: Scope = Depends(get_scope)) -> Response:
    s = await visible_run(store_of(request), run_id, scope)
    return json_response(run_dict(s))
