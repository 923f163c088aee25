"""Runs: PUT metadata, list, one run's summary."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ..flush_hint import HEADER, HEADER_DOC
from .common import ProjectQuery, RunIdPath, json_response, request_project, run_dict, visible_run
from .deps import FlushHintDep, PipelineDep, ScopeDep, StoreDep
from .models import LABEL_PATTERN, ErrorOut, Health, RunMetaIn, RunOut, RunsOut

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.put(
    "/{run_id}",
    response_model=RunOut,
    summary="Create a run or replace its metadata",
    description="Metadata (project, task, model, optimizer, batch_size, lr_schedule {name, params}, "
                "tags, anything else) replaces the previous metadata and is passed to the detectors. "
                "The run is (project, run_id): the project is the body's \"project\" or ?project= "
                "(they must agree), else the token's only project, else (auth off) `default`.",
    responses={200: {"headers": {HEADER: HEADER_DOC}}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def put_run(meta: RunMetaIn, pipeline: PipelineDep, scope: ScopeDep, hint: FlushHintDep,
                  run_id: str = RunIdPath, project: Optional[str] = ProjectQuery) -> Response:
    # a run's first request: its answer carries the flush hint, so the run's first batch follows it
    with hint.request():
        data = meta.model_dump(mode="json", exclude_none=True)
        if meta.lr_schedule is not None:
            data["lr_schedule"] = meta.lr_schedule.flat()
        where = request_project(scope, project, data.get("project"))
        s = await pipeline.put_meta(run_id, data, project=where)
        return json_response(run_dict(s), headers=hint.headers())


@router.get("", response_model=RunsOut, summary="List runs (each with its project)")
async def list_runs(store: StoreDep, scope: ScopeDep,
                    project: Optional[str] = Query(None, pattern=LABEL_PATTERN),
                    health: Optional[Health] = None,
                    active_since: Optional[float] = Query(None, description="seconds since the epoch",
                                                          allow_inf_nan=False)) -> Response:
    projects = scope.projects
    if project is not None:
        projects = frozenset([project]) if scope.allows(project) else frozenset()
    runs = await store.list_runs(projects=projects, health=health, active_since=active_since)
    return json_response({"runs": [run_dict(s) for s in runs]})


@router.get("/{run_id}", response_model=RunOut, summary="One run: last values, health, active alerts, advice",
            responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
async def get_run(store: StoreDep, scope: ScopeDep, run_id: str = RunIdPath,
                  project: Optional[str] = ProjectQuery) -> Response:
    s = await visible_run(store, request_project(scope, project), run_id)
    return json_response(run_dict(s))
