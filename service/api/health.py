"""Liveness (/healthz, always open) and readiness (/readyz: the store takes a write within the
store timeout; says why not: down, stalled, busy, out of memory, read-only)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from ..stores.base import StoreUnavailable
from .common import json_response
from .deps import SettingsDep, StoreDep, get_scope
from .models import ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive (no auth)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, summary="The store is reachable",
            responses={503: {"model": ReadyOut}}, dependencies=[Depends(get_scope)])
async def readyz(store: StoreDep, settings: SettingsDep) -> Response:
    try:
        # the store gives up after its own timeout; this bounds a store that would not
        await asyncio.wait_for(store.ping(), timeout=2 * settings.store_timeout_ms / 1000)
    except (StoreUnavailable, asyncio.TimeoutError, OSError) as e:
        reason = str(e) if isinstance(e, StoreUnavailable) else f"store did not answer: {type(e).__name__} {e}".rstrip()
        return json_response({"ready": False, "store": store.url, "reason": reason}, 503,
                             {"Retry-After": str(settings.retry_after)})
    return json_response({"ready": True, "store": store.url, "reason": None})
