"""POST /v1/runs/{run_id}/steps (the hot ingest path) and GET the series back."""

from __future__ import annotations

import time
from typing import Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from losswatch.detectors.types import json_safe

from ..auth import Scope, get_scope, scope_for
from ..downsample import METHOD, downsample
from ..downsample import __doc__ as DOWNSAMPLE_DOC
from ..flush_hint import HEADER, FlushHint
from ..ingest import LABEL_RULE, IngestError, parse_steps, safe_column, valid_label
from ..stores.base import StoreUnavailable
from .common import (
    PROJECT_RULE,
    ProjectQuery,
    RunIdPath,
    json_response,
    no_run,
    request_project,
    store_of,
    visible_run,
)
from .models import LABEL_PATTERN, ErrorOut, SeriesOut, StepsIn, StepsOut

router = APIRouter(prefix="/v1/runs", tags=["steps"])

_DOWNSAMPLE_TEXT = " ".join(DOWNSAMPLE_DOC.split("\n\n")[1].split())


def _inline_schema(model) -> dict:
    """A model's JSON schema with its $defs inlined (openapi_extra cannot add components)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.split("/")[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def _status_of(e: Exception) -> int:
    """The status the app's exception handlers answer ``e`` with (for the requests counter)."""
    if isinstance(e, StarletteHTTPException):  # FastAPI's HTTPException is one
        return e.status_code
    if isinstance(e, StoreUnavailable):
        return 503
    return 500


def _flush_hint(request: Request) -> FlushHint:
    """This process's flush hint, made from the settings on first use."""
    state = request.app.state
    hint = getattr(state, "flush_hint", None)
    if hint is None:
        s = state.settings
        hint = state.flush_hint = FlushHint(s.flush_hint_inflight, s.flush_hint_max)
    return hint


def _check_label(value: str, where: str, name: str) -> None:
    """The 422 FastAPI would give for a path/query label that breaks LABEL_PATTERN (the hot
    path reads them itself)."""
    if not valid_label(value):
        raise HTTPException(422, [{"loc": [where, name], "type": "value_error",
                                   "msg": f"{name} must be {LABEL_RULE}"}])


@router.post(
    "/{run_id}/steps",
    response_model=StepsOut,
    summary="Send a batch of step records",
    description=(
        "Stores the records (a repeated step is a duplicate: counted, not stored twice; a step lower "
        "than one already seen is stored in order but the detectors only see the in-order stream), "
        "runs the detectors and returns the alerts changed by this batch and the current advice. "
        "Creates the run (project, run_id) on first write; the project: the body's \"project\" or "
        "?project= (they must agree), else the token's only project, else (auth off) `default`."
    ),
    # the hot path reads the query and the token itself (FastAPI's parameter and dependency
    # machinery costs more than detection on a batch of 10): documented here instead
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": _inline_schema(StepsIn)}}},
        "parameters": [{"name": "run_id", "in": "path", "required": True,
                        "description": LABEL_RULE,
                        "schema": {"type": "string", "pattern": LABEL_PATTERN}},
                       {"name": "project", "in": "query", "required": False,
                        "description": PROJECT_RULE,
                        "schema": {"anyOf": [{"type": "string", "pattern": LABEL_PATTERN}, {"type": "null"}]}}],
        "security": [{"HTTPBearer": []}]},
    responses={200: {"headers": {HEADER: {
                   "description": "Present while this service is loaded: send no more often than this "
                                  "many seconds (docs/service-api.md, the flush hint)",
                   "schema": {"type": "number", "exclusiveMinimum": 0}}}},
               403: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut},
               503: {"model": ErrorOut}},
)
async def post_steps(request: Request) -> Response:
    metrics = request.app.state.metrics
    settings = request.app.state.settings
    t0 = time.perf_counter()
    code = 500
    hint = _flush_hint(request)
    hint.enter()
    try:
        scope = scope_for(settings.tokens, request.headers.get("authorization"))
        run_id = request.path_params["run_id"]
        _check_label(run_id, "path", "run_id")
        project = request.query_params.get("project")
        if project is not None:
            _check_label(project, "query", "project")
        body = await request.body()
        try:
            cols, body_project = parse_steps(body, settings.max_batch_records)
        except IngestError as e:
            metrics.rejected.inc(e.rejected)
            code = e.status
            return json_response({"detail": e.detail}, e.status)
        where = request_project(scope, project, body_project)
        res = await store_of(request).ingest(run_id, cols, project=where)
        metrics.accepted.inc(res.accepted)
        if res.duplicates:
            metrics.duplicate.inc(res.duplicates)
        if res.new_alert_ids:
            # an alert raised and resolved in one batch is in res.alerts twice: count it once
            uncounted = set(res.new_alert_ids)
            for a in res.alerts:
                if a["id"] in uncounted:
                    uncounted.discard(a["id"])
                    metrics.alerts_total.labels(a["kind"], a["severity"]).inc()
        notifier = request.app.state.notifier
        if notifier is not None and res.alerts:
            notifier.submit(res.alerts, res.project)
        code = 200
        return json_response({
            "accepted": res.accepted, "duplicates": res.duplicates, "out_of_order": res.out_of_order,
            "alerts": json_safe(res.alerts) if res.alerts else [],
            "recommendation": json_safe(res.recommendation), "health": res.health,
        }, headers=hint.headers())
    except Exception as e:
        code = _status_of(e)
        raise
    finally:
        hint.leave()
        metrics.request(code)
        metrics.ingest_latency.observe(time.perf_counter() - t0)


@router.get(
    "/{run_id}/steps",
    response_model=SeriesOut,
    summary="Read the series (downsampled for plotting on request)",
    description=f"Column-wise series with start <= step <= end. With max_points and more points "
                f"stored than that: {_DOWNSAMPLE_TEXT}",
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def get_steps(request: Request, run_id: str = RunIdPath, project: Optional[str] = ProjectQuery,
                    start: Optional[int] = Query(None, ge=0, le=2**63 - 1),
                    end: Optional[int] = Query(None, ge=0, le=2**63 - 1),
                    max_points: Optional[int] = Query(None, ge=4, le=1_000_000),
                    scope: Scope = Depends(get_scope)) -> Response:
    store = store_of(request)
    where = request_project(scope, project)
    await visible_run(store, where, run_id)
    cols = await store.read_series(run_id, start, end, project=where)
    if cols is None:
        raise HTTPException(404, no_run(where, run_id))
    total = len(cols)
    info = None
    if max_points is not None and total > max_points:
        cols, buckets = downsample(cols, max_points)
        info = {"method": METHOD, "buckets": buckets, "description": _DOWNSAMPLE_TEXT}
    return json_response({
        "run_id": run_id, "project": where, "start": start, "end": end, "total": total, "count": len(cols),
        "downsampled": info,
        "series": {
            "step": cols.step, "loss": safe_column(cols.loss), "grad_norm": safe_column(cols.grad_norm),
            "lr": safe_column(cols.lr), "val_loss": safe_column(cols.val_loss), "ts": cols.ts,
            "extra": [json_safe(x) if x else None for x in cols.extra],
        },
    })
