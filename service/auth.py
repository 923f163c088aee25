"""Bearer-token auth scoped to projects.

With LOSSWATCH_TOKENS set, every request but /healthz needs ``Authorization: Bearer <token>``;
a token sees and writes only runs of its projects. A run of another project answers 404 (as if
it did not exist: a token learns nothing about other projects). Without tokens everything is
open (the service then binds to 127.0.0.1 by default).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="a token from LOSSWATCH_TOKENS (when set)")


@dataclass(frozen=True, slots=True)
class Scope:
    """What the caller may see: ``projects`` None = everything (auth off)."""

    projects: frozenset[str] | None

    def allows(self, project: str) -> bool:
        return self.projects is None or project in self.projects

    def write_project(self, requested: str | None) -> str | None:
        """The project a write creates a new run in (None: the store's implicit "default").

        Raises 403 when the token does not cover ``requested``, 422 when the token covers several
        projects and the request names none.
        """
        if self.projects is None:
            return requested
        if requested is not None:
            if requested not in self.projects:
                raise HTTPException(403, f"this token may not write to project {requested!r}")
            return requested
        if len(self.projects) == 1:
            return next(iter(self.projects))
        raise HTTPException(422, "this token covers several projects: name one with ?project= "
                                 "(or the body's \"project\") to create a run")


def scope_for(tokens: dict[str, frozenset[str]], authorization: str | None) -> Scope:
    """The scope of an ``Authorization`` header value; 401 without a valid token when auth is on.

    Plain function so the ingest hot path can call it without FastAPI's dependency machinery.
    """
    if not tokens:
        return Scope(None)
    scheme, _, cred = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not cred:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    given = cred.strip().encode()
    for tok, projects in tokens.items():
        # constant-time comparison: no timing oracle on the token
        if hmac.compare_digest(tok.encode(), given):
            return Scope(projects)
    raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


async def get_scope(request: Request,
                    cred: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Scope:
    """FastAPI dependency: the caller's scope (declares bearer auth in the OpenAPI spec)."""
    return scope_for(request.app.state.settings.tokens, request.headers.get("authorization"))
