"""POST /v1/runs/{run_id}/actions: a client reports an action it applied (or a dry run)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from losswatch.detectors.types import json_safe

from ..auth import Scope, get_scope
from .common import RunIdPath, json_response, store_of, visible_run
from .models import ActionReportIn, ActionReportOut, ErrorOut

router = APIRouter(prefix="/v1/runs", tags=["actions"])


@router.post("/{run_id}/actions", response_model=ActionReportOut, status_code=201,
             summary="Report an applied or dry-run action",
             description="Stored in the run's alert history (GET /v1/runs/{run_id}/alerts); an applied "
                         "(not dry-run) action counts in losswatch_actions_applied_total{type}.",
             responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
async def report_action(request: Request, report: ActionReportIn, run_id: str = RunIdPath,
                        scope: Scope = Depends(get_scope)) -> Response:
    store = store_of(request)
    await visible_run(store, run_id, scope)
    atype = report.action.type
    stored = json_safe({"run_id": run_id, **report.model_dump(mode="json"), "reported_at": time.time()})
    try:
        stored = await store.record_action(run_id, stored)
    except KeyError:
        raise HTTPException(404, f"no run {run_id!r}") from None
    if report.applied and not report.dry_run:
        request.app.state.metrics.actions_applied_total.labels(atype).inc()
    return json_response(stored, 201)
