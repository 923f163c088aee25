"""GET /metrics in Prometheus' text format (names: notes/contracts.md, see service/metrics.py)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..stores.base import StoreUnavailable
from .deps import MetricsDep, ScopeDep, SettingsDep, StoreDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(store: StoreDep, settings: SettingsDep, service_metrics: MetricsDep, scope: ScopeDep) -> Response:
    since = time.time() - settings.metrics_ttl
    # still answer when the store cannot: the counters are this process's own, and
    # losswatch_store_up says so. Up means what /readyz means (the store takes a write: a
    # Redis out of memory still serves the per-run gauges, but no batch).
    # Both at once: a stalled store costs one store timeout, not two.
    ping, runs = await asyncio.gather(store.ping(), store.list_runs(projects=scope.projects, active_since=since),
                                      return_exceptions=True)
    for outcome in (ping, runs):
        if isinstance(outcome, BaseException) and not isinstance(outcome, StoreUnavailable):
            raise outcome
    up = not isinstance(ping, StoreUnavailable) and not isinstance(runs, StoreUnavailable)
    if isinstance(runs, StoreUnavailable):
        runs = []
    return Response(service_metrics.render(runs, up), media_type=CONTENT_TYPE_LATEST)
