"""Alerts: per run (with the action reports), across runs, acknowledge."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from losswatch.detectors.wire import encode_floats

from .common import ProjectQuery, RunIdPath, json_response, request_project, visible_run
from .deps import ScopeDep, StoreDep
from .models import AlertOut, AlertsOut, ErrorOut, Kind, RunAlertsOut, Severity

router = APIRouter(tags=["alerts"])


@router.get("/v1/runs/{run_id}/alerts", response_model=RunAlertsOut,
            summary="A run's alert history and the actions clients reported",
            responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
async def run_alerts(store: StoreDep, scope: ScopeDep, run_id: str = RunIdPath,
                     project: Optional[str] = ProjectQuery) -> Response:
    where = request_project(scope, project)
    await visible_run(store, where, run_id)
    alerts = await store.list_alerts(run_id=run_id, project=where)
    # (reports stored before runs were named by project lack it)
    actions = [{"project": where, **a} for a in await store.list_actions(run_id, project=where)]
    return json_response(encode_floats({"run_id": run_id, "project": where, "alerts": alerts, "actions": actions}))


@router.get("/v1/alerts", response_model=AlertsOut,
            summary="Alerts across runs (newest update first, each with its project)")
async def list_alerts(store: StoreDep, scope: ScopeDep, kind: Optional[Kind] = None,
                      severity: Optional[Severity] = None,
                      since: Optional[float] = Query(None, description="updated at or after (epoch seconds)",
                                                     allow_inf_nan=False)) -> Response:
    alerts = await store.list_alerts(projects=scope.projects, kind=kind, severity=severity, since=since)
    return json_response(encode_floats({"alerts": alerts}))


@router.post("/v1/alerts/{alert_id}/ack", response_model=AlertOut, summary="Acknowledge an alert",
             description="The alert of a run of the request's project (alert ids are unique within a project).",
             responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
async def ack_alert(store: StoreDep, scope: ScopeDep, alert_id: str = Path(..., max_length=300),
                    project: Optional[str] = ProjectQuery) -> Response:
    where = request_project(scope, project)
    a = await store.ack_alert(alert_id, project=where)
    if a is None:
        raise HTTPException(404, f"no alert {alert_id!r} in project {where!r}")
    return json_response(encode_floats(a))
