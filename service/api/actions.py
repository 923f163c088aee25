"""POST /v1/runs/{run_id}/actions: a client reports an action it applied (or a dry run)."""

from __future__ import annotations

import time
from typing import Optional

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from losswatch.detectors.wire import encode_floats

from ..flush_hint import HEADER, HEADER_DOC
from .common import ProjectQuery, RunIdPath, json_response, no_run, request_project, visible_run
from .deps import FlushHintDep, MetricsDep, ScopeDep, StoreDep
from .models import ActionReportIn, ActionReportOut, ErrorOut

router = APIRouter(prefix="/v1/runs", tags=["actions"])


@router.post("/{run_id}/actions", response_model=ActionReportOut, status_code=201,
             summary="Report an applied or dry-run action",
             description="Stored in the run's alert history (GET /v1/runs/{run_id}/alerts); an applied "
                         "(not dry-run) action counts in losswatch_actions_applied_total{type}.",
             responses={201: {"headers": {HEADER: HEADER_DOC}}, 403: {"model": ErrorOut},
                        404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
async def report_action(report: ActionReportIn, store: StoreDep, scope: ScopeDep, metrics: MetricsDep,
                        hint: FlushHintDep, run_id: str = RunIdPath,
                        project: Optional[str] = ProjectQuery) -> Response:
    with hint.request():
        where = request_project(scope, project)
        await visible_run(store, where, run_id)
        atype = report.action.type
        stored = encode_floats({"run_id": run_id, "project": where, **report.model_dump(mode="json"),
                                "reported_at": time.time()})
        try:
            stored = await store.record_action(run_id, stored, project=where)
        except KeyError:
            raise HTTPException(404, no_run(where, run_id)) from None
        if report.applied and not report.dry_run:
            metrics.actions_applied_total.labels(atype).inc()
        return json_response(stored, 201, headers=hint.headers())
