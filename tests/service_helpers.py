"""Small HTTP helpers for the service tests (real HTTP against a ``losswatch serve`` process)."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import httpx

from losswatch.client.acting import Status


def client(url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


#: Alert kinds a far too high LR raises (what the framework tests expect from a hot run)
LR_TOO_HIGH_KINDS = ("divergence", "nan", "grad_explosion", "spike", "oscillation")


def get_response(url: str, path: str) -> bytes:
    """GET ``url + path`` with the standard library; the body, after asserting a 200."""
    try:
        with urllib.request.urlopen(url + path, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    assert status == 200, (path, status, body[:300])
    return body


def get_json(url: str, path: str) -> Any:
    return json.loads(get_response(url, path))


def get_text(url: str, path: str) -> str:
    return get_response(url, path).decode()


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


def hot_run_checks(url: str, run_id: str, actor: Any,
                   project: str = "default") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What every framework's "far too high LR, acting on" test checks first: the service raised
    an LR-too-high alert (warning or worse), the Actor applied advice, and the service holds a
    report of each applied action, in order (and of its verdict). Returns (the run's alerts document, the applied
    actions)."""
    alerts = get_json(url, f"/v1/runs/{run_id}/alerts?project={project}")
    bad = [a for a in alerts["alerts"] if a["kind"] in LR_TOO_HIGH_KINDS and a["severity"] in ("warning", "critical")]
    assert bad, alerts
    applied = [a.to_dict() for a in actor.actions if a.status is Status.APPLIED]
    assert applied, list(actor.history)
    # an action's verdict is reported too, later, as a report that applies nothing: not counted here
    reported = [r for r in alerts["actions"] if "verdict" not in r["action"]]
    assert [r["action"]["type"] for r in reported] == [a["action"]["type"] for a in applied], \
        (alerts["actions"], applied)
    return alerts, applied


def wait_until(pred: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    """Wait for a condition (polled every 50 ms), failing with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
