"""What a route needs from the app, as FastAPI dependencies: the settings, the store, the
ingest pipeline, the process's metrics, the store's LR policies and the caller's scope.

The app's lifespan puts the objects on ``app.state.services`` (a :class:`Services`, once the
store is open); these functions are the only readers, so a route declares what it uses
(``store: StoreDep``) and a test can swap one with ``app.dependency_overrides[get_store]``.
They are ``async def`` because FastAPI runs a plain ``def`` dependency in its thread pool (a
thread hop per request). The
ingest fast path (:class:`~losswatch.service.api.steps.IngestRoute`) and the metadata PUT's
(:class:`~losswatch.service.api.runs.MetaRoute`) bypass FastAPI and read them through
:func:`app_services` instead (so an override does not reach them).
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..auth import Scope, scope_for
from ..flush_hint import FlushHint
from ..lr.policy_store import PolicyStore
from ..metrics import ServiceMetrics
from ..notify import Notifier
from ..pipeline import IngestPipeline
from ..settings import Settings
from ..stores.base import Store


class Services(NamedTuple):
    """The objects one request may use (the notifier is None without webhooks; the flush hint
    is this process's, counted and answered by a run's requests: its steps, metadata, actions)."""

    settings: Settings
    store: Store
    pipeline: IngestPipeline
    metrics: ServiceMetrics
    notifier: Notifier | None
    flush_hint: FlushHint


def app_services(app: Any) -> Services:
    """The app's objects, for code outside FastAPI's dependency injection."""
    return app.state.services


async def get_settings(request: Request) -> Settings:
    return request.app.state.services.settings


async def get_store(request: Request) -> Store:
    return request.app.state.services.store


async def get_pipeline(request: Request) -> IngestPipeline:
    return request.app.state.services.pipeline


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.services.metrics


async def get_flush_hint(request: Request) -> FlushHint:
    """This process's flush hint, for the answers to a run's requests."""
    return request.app.state.services.flush_hint


async def get_policies(request: Request) -> PolicyStore:
    """The LR policies, which live in the app's store (so every replica serves the same)."""
    return request.app.state.services.store.policies


_bearer = HTTPBearer(auto_error=False, description="a token from LOSSWATCH_TOKENS (when set)")


async def get_scope(request: Request, settings: Annotated[Settings, Depends(get_settings)],
                    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Scope:
    """The caller's scope (``_bearer`` declares bearer auth in the OpenAPI spec; the header is
    read as it came, since a malformed one is a 401 of :func:`scope_for`, not FastAPI's 403)."""
    return scope_for(settings.tokens, request.headers.get("authorization"))


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
PipelineDep = Annotated[IngestPipeline, Depends(get_pipeline)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
FlushHintDep = Annotated[FlushHint, Depends(get_flush_hint)]
PoliciesDep = Annotated[PolicyStore, Depends(get_policies)]
ScopeDep = Annotated[Scope, Depends(get_scope)]
