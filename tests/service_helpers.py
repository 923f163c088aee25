"""Small HTTP helpers for the service tests (real HTTP against a ``losswatch serve`` process)."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx


def client(url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def post_records(c: httpx.Client, run_id: str, records: list[dict[str, Any]], **params) -> httpx.Response:
    """POST records written by the standard library (bare NaN/Infinity tokens allowed)."""
    body = json.dumps({"records": records})
    return c.post(f"/v1/runs/{run_id}/steps", content=body, params=params,
                  headers={"Content-Type": "application/json"})


def num(v: Any) -> float | None:
    """A value as the API writes it back ("NaN"/"Infinity" strings) -> float."""
    return None if v is None else float(v)


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b
