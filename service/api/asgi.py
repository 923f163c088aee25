"""What the routes that answer before FastAPI's routing (:class:`~.steps.IngestRoute`,
:class:`~.runs.MetaRoute`) read from a raw ASGI request, read as Starlette reads it, so that
their answers are FastAPI's."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect
from starlette.types import Receive
from starlette.types import Scope as AsgiScope

#: the prefix of a run's paths
RUNS = "/v1/runs/"


def header(scope: AsgiScope, name: bytes) -> str | None:
    """The first header ``name`` (lower case), as Starlette's ``headers.get`` gives it."""
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


def query_project(scope: AsgiScope) -> str | None:
    """``?project=``: latin-1, blank values kept, the last of repeated names (Starlette's reading)."""
    if not scope["query_string"]:
        return None
    return dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)).get("project")


async def read_body(receive: Receive) -> bytes:
    """The whole body; :class:`ClientDisconnect` if the client went away first."""
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)
