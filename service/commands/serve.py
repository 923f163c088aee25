"""``losswatch serve``: run the service under uvicorn (uvloop + httptools when installed).

Flags override the LOSSWATCH_* environment variables; they are written back into the
environment so every uvicorn worker process builds the same settings.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="bind address (LOSSWATCH_HOST; default 127.0.0.1 without tokens, "
                                  "0.0.0.0 with LOSSWATCH_TOKENS)")
    p.add_argument("--port", type=int, help="port (LOSSWATCH_PORT; default 8000)")
    p.add_argument("--store", help="memory:// (default), redis://host:port/db or "
                                   "redis+cluster://host:port (LOSSWATCH_STORE)")
    p.add_argument("--workers", type=int, help="uvicorn worker processes (LOSSWATCH_WORKERS; default 1; "
                                               ">1 needs a shared store such as Redis)")
    p.add_argument("--notify", action="append", metavar="URL",
                   help="POST each raised or escalated alert of warning or worse to this webhook "
                        "(repeatable; URL#project=NAME: that project's alerts only; LOSSWATCH_NOTIFY)")
    p.add_argument("--public-url", help="the service's address as users reach it, for the run links in "
                                        "notifications (LOSSWATCH_PUBLIC_URL)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")


def run(args: argparse.Namespace) -> int:
    from losswatch.service.settings import Settings, SettingsError

    for flag, var in (("host", "LOSSWATCH_HOST"), ("port", "LOSSWATCH_PORT"),
                      ("store", "LOSSWATCH_STORE"), ("workers", "LOSSWATCH_WORKERS"),
                      ("public_url", "LOSSWATCH_PUBLIC_URL")):
        v = getattr(args, flag, None)
        if v is not None:
            os.environ[var] = str(v)
    if getattr(args, "notify", None):
        os.environ["LOSSWATCH_NOTIFY"] = " ".join(args.notify)
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        print(f"losswatch serve: {e}", file=sys.stderr)
        return 2
    if settings.workers > 1 and settings.store_url.startswith("memory"):
        print("losswatch serve: --workers > 1 needs a shared store (--store redis://...): each worker "
              "would have its own memory store and see a different part of each run", file=sys.stderr)
        return 2
    import uvicorn

    auth = (f"auth ON ({len(settings.tokens)} token(s))" if settings.auth_enabled
            else "auth OFF (no LOSSWATCH_TOKENS): listening on loopback only unless --host is given")
    print(f"losswatch serve: http://{settings.host}:{settings.port}  store={settings.store_url}  "
          f"workers={settings.workers}  {auth}", file=sys.stderr, flush=True)
    if settings.notify:
        print(f"losswatch serve: notifying {len(settings.notify)} webhook(s), run links to {settings.link_base}",
              file=sys.stderr, flush=True)
    uvicorn.run("losswatch.service.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level=args.log_level, access_log=False,
                loop="auto", http="auto", timeout_graceful_shutdown=5)
    return 0
