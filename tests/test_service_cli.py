"""``losswatch serve`` start-up: what it says and what it refuses."""

from __future__ import annotations

import os
import subprocess
import sys

from service_helpers import client


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LOSSWATCH_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "losswatch.service.cli", "serve", *args],
                          env=full, capture_output=True, text=True, timeout=60)


def test_several_workers_need_a_shared_store():
    r = _serve("--workers", "2", "--port", "1")
    assert r.returncode == 2 and "shared store" in r.stderr


def test_bad_settings_are_named():
    r = _serve(env={"LOSSWATCH_TOKENS": "no-equals-sign"})
    assert r.returncode == 2 and "LOSSWATCH_TOKENS" in r.stderr
    r = _serve(env={"LOSSWATCH_MAX_BATCH_RECORDS": "many"})
    assert r.returncode == 2 and "LOSSWATCH_MAX_BATCH_RECORDS" in r.stderr


def test_without_tokens_it_binds_loopback_and_says_so(service_factory):
    from losswatch.service.settings import Settings

    assert Settings.from_env({}).host == "127.0.0.1"
    assert Settings.from_env({"LOSSWATCH_TOKENS": "t=p"}).host == "0.0.0.0"
    assert Settings.from_env({"LOSSWATCH_TOKENS": "t=p", "LOSSWATCH_HOST": "10.0.0.1"}).host == "10.0.0.1"
    svc = service_factory()
    assert client(svc.url).get("/healthz").json() == {"status": "ok"}
    out = svc.output()
    assert "auth OFF" in out and "127.0.0.1" in out


def test_flags_come_from_the_environment_too(service_factory):
    svc = service_factory(env={"LOSSWATCH_MAX_BATCH_RECORDS": "3"})
    r = client(svc.url).post("/v1/runs/env-1/steps", json={"records": [{"step": s} for s in range(4)]})
    assert r.status_code == 413 and "3" in r.text


def test_one_version_everywhere(service_proc):
    from losswatch.client.http import Connection
    from losswatch.client.version import __version__

    r = subprocess.run([sys.executable, "-m", "losswatch.service.cli", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"losswatch {__version__}"
    assert client(service_proc).get("/openapi.json").json()["info"]["version"] == __version__
    assert Connection(service_proc)._headers["User-Agent"] == f"losswatch-client/{__version__}"
