"""Runs: PUT metadata, list, one run's summary."""

from __future__ import annotations

import json
from typing import Any, Optional

from fastapi import APIRouter, Query
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from losswatch.detectors.wire import encode_floats

from ..auth import scope_for
from ..flush_hint import HEADER, HEADER_DOC, FlushHint
from ..ingest import LABEL_RE
from ..pipeline import IngestPipeline
from ..stores.base import StoreUnavailable
from .asgi import RUNS, header, query_project, read_body
from .common import (
    ProjectQuery,
    RunIdPath,
    json_response,
    request_project,
    run_dict,
    store_down_response,
    visible_run,
)
from .deps import FlushHintDep, PipelineDep, ScopeDep, StoreDep, app_services
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
        data = stored_meta(meta)
        where = request_project(scope, project, data.get("project"))
        return await store_meta(pipeline, hint, run_id, data, where)


def stored_meta(meta: RunMetaIn) -> dict[str, Any]:
    """The metadata as the run keeps it: the fields given, as JSON, the schedule flattened."""
    data = meta.model_dump(mode="json", exclude_none=True)
    if meta.lr_schedule is not None:
        data["lr_schedule"] = meta.lr_schedule.flat()
    return data


async def store_meta(pipeline: IngestPipeline, hint: FlushHint, run_id: str, data: dict[str, Any],
                     project: str) -> Response:
    """The run's metadata replaced; the answer: the run, with the flush hint's header, and the
    alert changes the new metadata made (``alerts``, as a batch's answer has them)."""
    s, changes = await pipeline.put_meta_changes(run_id, data, project=project)
    return json_response({**run_dict(s), "alerts": encode_floats(changes)}, headers=hint.headers())


class MetaRoute:
    """Pure ASGI middleware that answers a well-formed ``PUT /v1/runs/{run_id}`` itself, before
    FastAPI's routing, and passes every other request on.

    Every run starts and ends with this PUT, all runs of a fleet within a second or two, and
    FastAPI's per-request machinery (routing, the Request object, the dependency solver) cost
    about a third of it (bench/results/ingest-breakdown.md). Only a request that FastAPI would
    answer 200 is answered here, by the same code (:func:`stored_meta`, :func:`store_meta`): a
    JSON body that ``RunMetaIn`` accepts, a valid run id and ``?project=``, a token that covers
    the project. Anything else (a refused body, a bad token, another content type) goes on to
    FastAPI with the body as it came, so every refusal is FastAPI's own. A store that fails is
    answered as the app's handler does (:func:`~.common.store_down_response`). Added inside
    ``BodyLimit``, which counts the body; an app under a root path is left to FastAPI."""

    def __init__(self, app: ASGIApp, service: Any) -> None:
        self.app = app
        self.service = service  # the FastAPI app: its state holds the pipeline, settings, hint

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        run_id = path[len(RUNS):]
        if (scope["type"] != "http" or scope["method"] != "PUT" or not path.startswith(RUNS)
                or scope.get("root_path") or not LABEL_RE.fullmatch(run_id)):
            return await self.app(scope, receive, send)
        try:
            body = await read_body(receive)
        except ClientDisconnect:
            return  # nobody to answer
        services = app_services(self.service)
        accepted = _accepted(scope, body, services.settings.tokens)
        if accepted is None:
            unread: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

            async def replay() -> Message:  # the body as one message, then the connection's own
                return unread.pop() if unread else await receive()
            return await self.app(scope, replay, send)
        data, where = accepted
        with services.flush_hint.request():
            try:
                answer = await store_meta(services.pipeline, services.flush_hint, run_id, data, where)
            except StoreUnavailable as e:
                answer = store_down_response(e, services.settings.retry_after)
        await answer(scope, receive, send)


def _accepted(scope: AsgiScope, body: bytes, tokens: Any) -> tuple[dict[str, Any], str] | None:
    """(the metadata to store, the project) of a PUT that FastAPI's route would take as it
    does; None for any other (FastAPI answers it)."""
    if header(scope, b"content-type") != "application/json":
        return None
    project = query_project(scope)
    if project is not None and not LABEL_RE.fullmatch(project):
        return None
    try:
        meta = RunMetaIn.model_validate(json.loads(body))
        data = stored_meta(meta)
        caller = scope_for(tokens, header(scope, b"authorization"))
        return data, request_project(caller, project, data.get("project"))
    except Exception:   # whatever it is (a refusal, a body too deep to parse), FastAPI's to answer
        return None


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
