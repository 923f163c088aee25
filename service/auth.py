"""Bearer-token auth scoped to projects.

With LOSSWATCH_TOKENS set, every request but /healthz needs ``Authorization: Bearer <token>``;
a token sees and writes only runs of its projects. A run is named by (project, run_id): a request
acts in one project (:meth:`Scope.project`), so the same run id in another project is another
run, which it can neither see nor disturb (it answers as for a run that does not exist). Without
tokens everything is open (the service then binds to 127.0.0.1 by default).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException

from .stores.base import DEFAULT_PROJECT


@dataclass(frozen=True, slots=True)
class Scope:
    """What the caller may see: ``projects`` None = everything (auth off)."""

    projects: frozenset[str] | None

    def allows(self, project: str) -> bool:
        return self.projects is None or project in self.projects

    def project(self, requested: str | None) -> str:
        """The project a request acts in, from the project it names (``?project=`` or the body's
        ``"project"``; None: it names none).

        Auth off: the named project, else :data:`DEFAULT_PROJECT`. A token: the named project
        if the token covers it (else 403), else the token's only project; a token of several
        projects (or of none) that names none gets a 422, never a guess.
        """
        if self.projects is None:
            return requested or DEFAULT_PROJECT
        if requested is not None:
            if requested not in self.projects:
                raise HTTPException(403, f"this token does not cover project {requested!r}")
            return requested
        if len(self.projects) == 1:
            return next(iter(self.projects))
        raise HTTPException(422, "this token covers several projects: name one with ?project= "
                                 "(or the body's \"project\")")


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

