"""What losswatch tells the person running training, on the ``losswatch`` logger.

- the run's start line: its id and where to read it (the service's page and API for the run, or
  "detecting in-process (no URL)");
- every alert event a person is told of (``losswatch.detectors.events``): ``raised`` and
  ``escalated`` at WARNING when the alert is a warning or critical (INFO for an info one),
  ``resolved`` at INFO;
- an integration's notices (no per-step value available, nothing sent after many steps).

Visible by default. Python's own fallback (``logging.lastResort``) prints only WARNING and above
when nothing is configured, so a start line or a resolution would be lost. Hence, on first use,
the ``losswatch`` logger gets level INFO (unless a level was set on it already) and a stderr
handler that prints only while no other handler would: as soon as the application configures
logging (a root handler, ``logging.basicConfig``, a handler on ``losswatch``), that handler
stays quiet and the records go where the application sends them, printed once.

Silence it like any library's logger: ``logging.getLogger("losswatch").setLevel(logging.WARNING)``
keeps alerts and drops the start line and resolutions; ``logging.ERROR`` drops everything.
"""

from __future__ import annotations

import logging
import sys
from urllib.parse import quote

# typing costs ~3 ms to import; annotations are strings (PEP 563), so only checkers need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["log", "run_started", "alert_event", "run_page"]

log = logging.getLogger("losswatch")

_LEVELS = {"critical": logging.WARNING, "warning": logging.WARNING}


class _UntilConfigured(logging.Handler):
    """Prints to stderr (looked up at each record, so a redirected ``sys.stderr`` is followed)
    while no other handler on the record's way up would receive it (one whose level lets the
    record through: a root handler at WARNING does not take the INFO start line)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(message)s"))

    def _others_receive(self, record: logging.LogRecord) -> bool:
        logger: Any = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self and record.levelno >= h.level for h in logger.handlers):
                return True
            if not logger.propagate:
                return False
            logger = logger.parent
        return False

    def emit(self, record: logging.LogRecord) -> None:
        if self._others_receive(record):
            return
        try:
            stream = sys.stderr
            if stream is not None:
                stream.write(self.format(record) + "\n")
                stream.flush()
        except Exception:  # noqa: BLE001 - telling must never break training
            self.handleError(record)


def _install() -> None:
    if not any(isinstance(h, _UntilConfigured) for h in log.handlers):
        log.addHandler(_UntilConfigured())
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


_install()


def run_page(url: str, run_id: str, project: str | None = None) -> tuple[str, str]:
    """The service's page and API address of a run (a run is named by its project and its run
    id: without a project, the token's only project or, with auth off, `default`)."""
    base = url.rstrip("/")
    query = f"?project={quote(project, safe='')}" if project else ""
    return f"{base}/runs/{run_id}{query}", f"{base}/v1/runs/{run_id}{query}"


def run_started(run_id: str, url: str | None, local_detectors: bool = True, project: str | None = None) -> None:
    """The start line: the run id and where to read it."""
    if url:
        page, api = run_page(url, run_id, project)
        log.info("losswatch: run %s -> %s (API %s)", run_id, page, api)
    elif local_detectors:
        log.info("losswatch: run %s: detecting in-process (no URL)", run_id)
    else:
        log.info("losswatch: run %s: detecting in-process (no URL); only the NaN check runs "
                 "(numpy is not installed)", run_id)


def alert_event(run_id: str, alert: dict[str, Any]) -> None:
    """One alert event (``alert["event"]``: raised, escalated or resolved) as one line."""
    try:
        _alert_event(run_id, alert)
    except Exception:  # noqa: BLE001 - an odd alert must not stop the others from being told
        log.exception("losswatch: could not describe an alert of run %s", run_id)


def _alert_event(run_id: str, alert: dict[str, Any]) -> None:
    event = alert.get("event")
    severity = alert.get("severity") or "info"
    what = alert.get("detector") or alert.get("kind") or "alert"
    if event == "resolved":
        log.info("losswatch: run %s step %s: %s resolved (raised at step %s)", run_id,
                 alert.get("resolved_step"), what, alert.get("step"))
        return
    action = alert.get("action") if isinstance(alert.get("action"), dict) else {}
    advice = ""
    if action.get("type") not in (None, "none"):
        params = ", ".join(f"{k}={v}" for k, v in action.items() if k not in ("type", "reason"))
        advice = f"; advice: {action['type']}" + (f" ({params})" if params else "")
    log.log(_LEVELS.get(severity, logging.INFO), "losswatch: run %s step %s: %s %s %s: %s%s", run_id,
            alert.get("last_step", alert.get("step")), severity, what, event, alert.get("message", ""), advice)
