"""A running service, read from the command line (``losswatch runs``, ``show``, ``export``).

Where: ``--url``, else ``$LOSSWATCH_URL``, else the local default; the token: ``--token``, else
``$LOSSWATCH_TOKEN`` (the names the client reads). The HTTP goes through the client's own
standard-library :class:`~losswatch.client.http.Connection`, so these commands work in a
client-only install (no FastAPI, no numpy).

Every failure is a :class:`LookError` carrying one line for the user and the exit status:
:data:`EXIT_ANSWERED` (1) when the service answered but not with what was asked (an unknown run,
a missing or wrong token), :data:`EXIT_NO_SERVICE` (2) when no service answered at all.
"""

from __future__ import annotations

import argparse
import os
from typing import Any
from urllib.parse import quote, urlencode

from losswatch.detectors.wire import VALUE_FIELDS, decode_float

DEFAULT_URL = "http://127.0.0.1:8000"  # where `losswatch serve` listens by default
EXIT_ANSWERED = 1
EXIT_NO_SERVICE = 2


class LookError(Exception):
    """One line for the user, and the exit status the command ends with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_service_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help=f"the service (default $LOSSWATCH_URL, else {DEFAULT_URL})")
    p.add_argument("--token", help="bearer token (default $LOSSWATCH_TOKEN)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """RUN and --project: a run is named by its project and its run id."""
    p.add_argument("run_id", metavar="RUN", help="the run id (`losswatch runs` lists them)")
    p.add_argument("--project", help="the run's project (default: the project of the one run of that id the "
                                     "service lists)")


class Service:
    """GET JSON from one service; :class:`LookError` for anything but a 200."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        from losswatch.client.http import Connection

        self.url = (url or os.environ.get("LOSSWATCH_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else (os.environ.get("LOSSWATCH_TOKEN") or None)
        try:
            self._transport = Connection(self.url, token=self.token, timeout=timeout)
        except ValueError as e:
            raise LookError(str(e).removeprefix("losswatch: "), EXIT_NO_SERVICE) from None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Service":
        return cls(args.url, args.token)

    def close(self) -> None:
        self._transport.close()

    def get(self, path: str, **params: Any) -> Any:
        from losswatch.client.transport import ServiceError

        query = urlencode({k: v for k, v in params.items() if v is not None})
        try:
            reply = self._transport.request("GET", path + (f"?{query}" if query else ""))
        except ServiceError as e:
            raise LookError(f"no losswatch service answers at {self.url} ({e}); start one with "
                            f"`losswatch serve`, or pass --url / set LOSSWATCH_URL", EXIT_NO_SERVICE) from None
        if reply.status == 200:
            return reply.json()
        if reply.status == 401:
            hint = "this token was refused" if self.token else "it needs a token"
            raise LookError(f"{self.url} answered 401: {hint}; pass --token or set LOSSWATCH_TOKEN",
                            EXIT_ANSWERED)
        detail = _detail(reply)
        if reply.status == 404:
            raise LookError(detail or f"{path}: not found", EXIT_ANSWERED)
        raise LookError(f"{self.url}{path} answered {reply.status}: {detail}", EXIT_ANSWERED)

    # --- the reads the commands make --------------------------------------------------------
    def runs(self, project: str | None = None) -> list[dict[str, Any]]:
        return self.get("/v1/runs", project=project)["runs"]

    def project_of(self, run_id: str, project: str | None) -> str | None:
        """The project to read ``run_id`` in: ``project`` when given, else that of the one run of
        this id among the runs the service lists (None when there is none: the service's own
        default then answers). Several: a LookError asking for --project, never a guess."""
        if project is not None:
            return project
        found = sorted(r["project"] for r in self.runs() if r["run_id"] == run_id)
        if len(found) > 1:
            raise LookError(f"run {run_id!r} exists in projects {', '.join(found)}: name one with --project",
                            EXIT_ANSWERED)
        return found[0] if found else None

    def run(self, run_id: str, project: str | None = None) -> dict[str, Any]:
        try:
            return self.get(f"/v1/runs/{quote(run_id, safe='')}", project=project)
        except LookError as e:
            if e.exit_code == EXIT_ANSWERED and str(e).startswith("no run"):
                where = f" in project {project!r}" if project else ""
                seen = " your token can see" if self.token else ""
                raise LookError(f"no run {run_id!r}{where}{seen} at {self.url} (`losswatch runs` lists them "
                                f"with their projects; name one with --project)", EXIT_ANSWERED) from None
            raise

    def alerts(self, run_id: str, project: str | None = None) -> dict[str, Any]:
        return self.get(f"/v1/runs/{quote(run_id, safe='')}/alerts", project=project)

    def series(self, run_id: str, max_points: int | None = None, project: str | None = None,
               attempt: int | None = None) -> dict[str, Any]:
        """The run's stored steps, column-wise, values as floats (NaN and infinities restored);
        all of them without ``max_points`` (the endpoint answers a range in one reply). The run's
        current timeline, or with ``attempt`` that attempt's steps (after a rollback)."""
        doc = self.get(f"/v1/runs/{quote(run_id, safe='')}/steps", max_points=max_points, project=project,
                       attempt=attempt)
        series = doc["series"]
        for name in VALUE_FIELDS:
            series[name] = [to_float(v) for v in series[name]]
        series["extra"] = [{k: to_float(v) for k, v in x.items()} if x else None for x in series["extra"]]
        return doc


#: a value as the API writes it ("NaN", "Infinity", "-Infinity" for the non-finite) -> float
to_float = decode_float


def _detail(reply: Any) -> str:
    try:
        detail = reply.json().get("detail")
    except (ValueError, AttributeError):
        return reply.body[:200].decode(errors="replace")
    return detail if isinstance(detail, str) else str(detail)
