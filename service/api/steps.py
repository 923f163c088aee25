"""POST /v1/runs/{run_id}/steps (the hot ingest path) and GET the series back."""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Optional

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from losswatch.detectors.wire import encode_floats

from ..attempts import MAX_ATTEMPTS
from ..auth import scope_for
from ..downsample import METHOD, downsample
from ..downsample import __doc__ as DOWNSAMPLE_DOC
from ..flush_hint import HEADER, HEADER_DOC
from ..ingest import LABEL_RULE, IngestError, parse_steps, safe_column, valid_label
from ..stores.base import StoreUnavailable
from .asgi import RUNS, header, query_project, read_body
from .common import (
    PROJECT_RULE,
    ProjectQuery,
    RunIdPath,
    http_error_response,
    json_bytes,
    json_response,
    no_run,
    request_project,
    store_down_response,
    visible_run,
)
from .deps import ScopeDep, Services, StoreDep, app_services
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
    if isinstance(e, ClientDisconnect):
        return 499  # the client went away mid-body (nginx's code): no answer, and not a fault here
    return 500


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
    responses={200: {"headers": {HEADER: HEADER_DOC}},
               403: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut},
               503: {"model": ErrorOut}},
)
async def post_steps(request: Request) -> Response:
    # FastAPI's route, for the spec (and for an app mounted under a root path): an app built by
    # create_app answers this path in IngestRoute, before FastAPI's routing, with the same code
    status, body, headers = await ingest_steps(
        app_services(request.app), request.headers.get("authorization"), request.path_params["run_id"],
        request.query_params.get("project"), request.body)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def ingest_steps(services: Services, authorization: str | None, run_id: str, project: str | None,
                       read_body: Callable[[], Awaitable[bytes]]) -> tuple[int, bytes, dict[str, str] | None]:
    """One POST of step records: (status, JSON body, extra headers or None) of the answer, 200
    (with the flush hint's header while the process is loaded) or a refused body's 413/422;
    raises HTTPException (401, 403, a bad run id or ?project=), StoreUnavailable."""
    settings, pipeline, metrics, notifier = services.settings, services.pipeline, services.metrics, services.notifier
    t0 = time.perf_counter()
    code = 500
    hint = services.flush_hint
    hint.enter()  # every POST /steps counts towards the load, refused ones too
    try:
        scope = scope_for(settings.tokens, authorization)
        _check_label(run_id, "path", "run_id")
        if project is not None:
            _check_label(project, "query", "project")
        body = await read_body()
        try:
            cols, body_project = parse_steps(body, settings.max_batch_records)
        except IngestError as e:
            metrics.rejected.inc(e.rejected)
            code = e.status
            return e.status, json_bytes({"detail": e.detail}), None
        where = request_project(scope, project, body_project)
        res = await pipeline.ingest(run_id, cols, project=where)
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
        if notifier is not None and res.notify:
            notifier.submit(res.notify, res.project)
        code = 200
        return 200, json_bytes({
            "accepted": res.accepted, "duplicates": res.duplicates, "out_of_order": res.out_of_order,
            "alerts": encode_floats(res.alerts) if res.alerts else [],
            "recommendation": encode_floats(res.recommendation), "health": res.health,
        }), hint.headers()
    except Exception as e:
        code = _status_of(e)
        raise
    finally:
        hint.leave()
        metrics.request(code)
        metrics.ingest_latency.observe(time.perf_counter() - t0)


class IngestRoute:
    """Pure ASGI middleware that answers ``POST /v1/runs/{run_id}/steps`` itself, before FastAPI's
    routing, and passes every other request on.

    A run flushes a few records every half second, so the service mostly sees small batches, and
    for those FastAPI's per-request machinery (the routing's regex per route, the Request object,
    the dependency solver, the exception middleware's context) cost about as much as the detectors
    (bench/results/ingest-breakdown.md). The answers are those of :func:`post_steps`, byte for byte:
    the same :func:`ingest_steps`, errors through the app's own answers
    (:func:`~.common.http_error_response`, :func:`~.common.store_down_response`), and an
    unexpected exception goes on up to Starlette's 500. Added inside ``BodyLimit``, which still
    counts the body. An app under a root path is left to FastAPI (its routing strips the prefix).
    """

    def __init__(self, app: ASGIApp, service: Any) -> None:
        self.app = app
        self.service = service  # the FastAPI app: its state holds the store, settings, metrics

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(RUNS)
                or not path.endswith(_STEPS) or scope.get("root_path")):
            return await self.app(scope, receive, send)
        run_id = path[len(RUNS):-len(_STEPS)]
        if not run_id or "/" in run_id:  # not this route's path: FastAPI answers (404, 405...)
            return await self.app(scope, receive, send)
        services = app_services(self.service)
        try:
            status, body, headers = await ingest_steps(services, header(scope, b"authorization"), run_id,
                                                       query_project(scope), lambda: read_body(receive))
        except StarletteHTTPException as e:
            await http_error_response(e)(scope, receive, send)
        except StoreUnavailable as e:
            await store_down_response(e, services.settings.retry_after)(scope, receive, send)
        except ClientDisconnect:
            return  # nobody to answer
        else:
            # Starlette's Response would send these same two messages: its extra headers first
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()] if headers else []
            raw += [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": body})


_STEPS = "/steps"


@router.get(
    "/{run_id}/steps",
    response_model=SeriesOut,
    summary="Read the series (downsampled for plotting on request)",
    description=f"Column-wise series with start <= step <= end: the run's current timeline (each "
                f"earlier attempt up to where a later one went back to, then the latest attempt), "
                f"or with ?attempt=N that attempt's steps alone. With max_points and more points "
                f"stored than that: {_DOWNSAMPLE_TEXT}",
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def get_steps(store: StoreDep, scope: ScopeDep, run_id: str = RunIdPath,
                    project: Optional[str] = ProjectQuery,
                    start: Optional[int] = Query(None, ge=0, le=2**63 - 1),
                    end: Optional[int] = Query(None, ge=0, le=2**63 - 1),
                    max_points: Optional[int] = Query(None, ge=4, le=1_000_000),
                    attempt: Optional[int] = Query(None, ge=1, le=MAX_ATTEMPTS,
                                                   description="one attempt of the run (1: the first)")) -> Response:
    where = request_project(scope, project)
    await visible_run(store, where, run_id)
    cols = await store.read_series(run_id, start, end, project=where, attempt=attempt)
    if cols is None:
        raise HTTPException(404, no_run(where, run_id))
    total = len(cols)
    info = None
    if max_points is not None and total > max_points:
        cols, buckets = downsample(cols, max_points)
        info = {"method": METHOD, "buckets": buckets, "description": _DOWNSAMPLE_TEXT}
    return json_response({
        "run_id": run_id, "project": where, "attempt": attempt, "start": start, "end": end, "total": total,
        "count": len(cols),
        "downsampled": info,
        "series": {
            "step": cols.step, "loss": safe_column(cols.loss), "grad_norm": safe_column(cols.grad_norm),
            "lr": safe_column(cols.lr), "val_loss": safe_column(cols.val_loss), "ts": cols.ts,
            "extra": [encode_floats(x) if x else None for x in cols.extra],
        },
    })
