"""The built-in web page: GET / (the runs) and GET /runs/{run_id} (one run's curves, alerts and
actions), with their scripts and styles under /static/.

The HTML and the assets are fixed files shipped in the package (service/static/): they hold no
data. The page's scripts read everything through the /v1 API with the token the user typed
(kept in the browser's localStorage and sent as ``Authorization: Bearer``), so a token sees in
the page exactly what it sees in the API. Nothing is loaded from another host: the
Content-Security-Policy below forbids it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from .common import RunIdPath

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_URL = "/static"
RUN_PAGE_PREFIX = "/runs"

# 'self' only: the page works offline and cannot be made to talk to another host
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _html(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8", headers=HEADERS)


def install(app: FastAPI) -> None:
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="page-static")
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def runs_page() -> FileResponse:
        return _html("runs.html")

    @router.get(RUN_PAGE_PREFIX + "/{run_id}")
    async def run_page(run_id: str = RunIdPath) -> FileResponse:
        # the id is checked like the API's (a 422 for one the API could never hold); the script
        # reads it from the address
        return _html("run.html")

    app.include_router(router)
