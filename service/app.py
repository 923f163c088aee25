"""The FastAPI app factory: ``create_app(settings)``; uvicorn runs
``losswatch.service.app:create_app`` with ``factory=True`` (settings from LOSSWATCH_*)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from losswatch.client.version import __version__
from losswatch.detectors.wire import encode_floats

from .api import actions, alerts, docs, health, page, policies, runs, steps
from .api import metrics as metrics_api
from .api.common import http_error_response, store_down_response
from .api.deps import Services
from .api.models import ErrorOut
from .auth import scope_for
from .flush_hint import FlushHint
from .metrics import ServiceMetrics
from .notify import start_notifier
from .pipeline import IngestPipeline
from .settings import Settings
from .stores.base import StoreUnavailable, open_store

log = logging.getLogger("losswatch.service")


class BodyTooLarge(StarletteHTTPException):
    """Raised while a body streams past the limit. An HTTPException so that FastAPI's body
    reading lets it through as it is (any other exception there becomes "error parsing the
    body") and the app's handler answers 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than the limit of {max_bytes} bytes (LOSSWATCH_MAX_BODY_BYTES)")


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over the limit, by Content-Length up front or by
    counting a chunked body as it streams (nothing over the limit is ever buffered)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> Response:
        return Response(orjson.dumps({"detail": BodyTooLarge(self.max_bytes).detail}),
                        status_code=413, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = 0
                if n > self.max_bytes:
                    await self._too_large()(scope, receive, send)
                    return
                break
        limit = self.max_bytes
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:  # raised where no handler of the app answered it
            if not started:
                await self._too_large()(scope, receive, send)


class DocsAuth:
    """With tokens configured, the spec and the docs pages need a token too, like every API
    request but /healthz (the web page's fixed files and the docs' script bundles hold no data
    and are served to anyone). Pure ASGI and only a path comparison for every other request."""

    PATHS = frozenset(("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"))

    def __init__(self, app: ASGIApp, tokens: dict) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.PATHS:
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            try:
                scope_for(self.tokens, header)
            except StarletteHTTPException as e:
                await Response(orjson.dumps({"detail": e.detail}), status_code=e.status_code,
                               media_type="application/json", headers=e.headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = open_store(settings)
        pipeline = IngestPipeline(store, engine_cache=settings.redis_engine_cache)
        if not settings.auth_enabled:
            log.warning("losswatch: no LOSSWATCH_TOKENS set: authentication is OFF "
                        "(bind to 127.0.0.1 unless you set tokens)")
        notifier = start_notifier(settings, metrics)
        # what the routes use (api/deps.py reads it)
        app.state.services = Services(settings=settings, store=store, pipeline=pipeline, metrics=metrics,
                                      notifier=notifier,
                                      flush_hint=FlushHint(settings.flush_hint_inflight, settings.flush_hint_max))
        preparing = asyncio.create_task(store.prepare())
        try:
            yield
        finally:
            preparing.cancel()
            if notifier is not None:
                await notifier.stop()
            await store.close()

    app = FastAPI(
        title="losswatch",
        version=__version__,
        summary="Training-health monitor: step records in, alerts, advice and Prometheus metrics out.",
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry hooks look up the global providers on every request
        # (~100 us with opentelemetry installed); the service exports its own Prometheus metrics
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # FastAPI's own /docs and /redoc load their scripts from a CDN: docs.install serves them offline
        docs_url=None,
        redoc_url=None,
    )
    common = {401: {"model": ErrorOut, "description": "missing or invalid bearer token (auth on)"},
              403: {"model": ErrorOut, "description": "the token does not cover the project named"},
              503: {"model": ErrorOut, "description": "the store is unavailable; retry after Retry-After"}}
    for r in (steps.router, runs.router, alerts.router, actions.router, health.router, metrics_api.router,
              policies.router):
        app.include_router(r, responses=common)
    docs.install(app)
    page.install(app)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, exc: StoreUnavailable) -> Response:
        return store_down_response(exc, settings.retry_after)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return http_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler, but NaN-safe (a rejected NaN in the input must not break the reply)
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return Response(orjson.dumps({"detail": encode_floats(errors)}, default=str), status_code=422,
                        media_type="application/json")

    # the ingest fast path inside BodyLimit (which counts its bodies too), outside FastAPI's routing
    app.add_middleware(steps.IngestRoute, service=app)
    app.add_middleware(runs.MetaRoute, service=app)   # the metadata PUT's, likewise
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.auth_enabled:
        app.add_middleware(DocsAuth, tokens=settings.tokens)
    return app
