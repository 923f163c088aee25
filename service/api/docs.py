"""The API reference pages, /docs (Swagger UI) and /redoc, served offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank without internet.
Here the scripts and styles come from the ``fastapi-offline`` package (Swagger UI 5, which reads
the OpenAPI 3.1 spec FastAPI writes, and ReDoc), served by the service under /docs/assets/.
The pages stay behind the token when auth is on (``DocsAuth`` in app.py); the assets are the
published bundles and carry no data, so they are served to anyone.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def install(app: FastAPI) -> None:
    """Serve /docs, /docs/oauth2-redirect, /redoc and their assets (create the app with
    ``docs_url=None, redoc_url=None`` so FastAPI does not add its CDN pages)."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    router = APIRouter(include_in_schema=False)
    title = f"{app.title} API"

    @router.get(DOCS_URL)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=title, oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png")

    @router.get(OAUTH2_REDIRECT_URL)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get(REDOC_URL)
    async def redoc() -> HTMLResponse:
        # with_google_fonts=False: the fonts would be the one request to another host
        return get_redoc_html(openapi_url=app.openapi_url, title=title,
                              redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False)

    app.include_router(router)
