"""GET /metrics in Prometheus' text format (names: notes/contracts.md, see service/metrics.py)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..auth import Scope, get_scope
from ..stores.base import StoreUnavailable

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request, scope: Scope = Depends(get_scope)) -> Response:
    app = request.app
    since = time.time() - app.state.settings.metrics_ttl
    try:
        runs = await app.state.store.list_runs(projects=scope.projects, active_since=since)
        up = True
    except StoreUnavailable:
        # still answer: the counters are this process's own, and losswatch_store_up says why
        runs, up = [], False
    return Response(app.state.metrics.render(runs, up), media_type=CONTENT_TYPE_LATEST)
