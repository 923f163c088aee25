"""Where a run's records go and where its verdicts come from: the client's transports.

The background :class:`~.worker.Worker` hands each batch of records it collects to the run's
transport and asks it, each cycle, to send what waits; the Monitor tells it the run's metadata,
checkpoints, rewinds and action reports. A run has one transport, chosen once by
:func:`make_transport`:

- :class:`~.http.HttpTransport` (a service URL is set): records are encoded, kept in the worker's
  spool until the service acknowledged them, and the service's answers carry the verdict;
- :class:`LocalTransport` (no URL, numpy importable): the detectors run in this process, in the
  worker's thread, and give the verdict; nothing leaves the process;
- :class:`NoTransport` (no URL and no numpy, or a rank that does not report the run): nothing
  leaves the process and no detector runs; the NaN check of ``log()`` is all there is.

Callers never test which one they hold: they ask it (:attr:`Transport.judges`,
:meth:`Transport.set_meta`...), and each answers for itself.
"""

from __future__ import annotations

import warnings

# typing costs ~3 ms to import; annotations are strings (PEP 563), so only checkers need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .local import LocalEngine
    from .spool import Spool

    #: ``on_verdict(alerts, recommendation, health, has_recommendation)``
    VerdictSink = Callable[[list, Any, Any, bool], None]


class ServiceError(Exception):
    """Sending failed in a way worth retrying (the service unreachable, or 5xx/429/408/401/403):
    keep the data, retry later. ``retry_after``: seconds the service asked for, if it did;
    ``status``: the answer's HTTP status, None when there was no answer."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status

    @property
    def busy(self) -> bool:
        """The service answered that it cannot take this now (429, 502, 503, 504): it is there,
        and a retry at the time it asked for is worth waiting for, at exit too."""
        return self.status in (429, 502, 503, 504)


class Transport:
    """What the worker and the Monitor ask of a transport, with the answers of one that sends
    nothing (every in-process transport keeps these defaults where they fit).

    Attributes
    ----------
    url : str or None
        The service records are sent to; None when they stay in this process.
    stats : dict
        ``sent`` (records the service acknowledged), ``posts``, ``rejected`` (records it refused).
    flush_hint : float
        Seconds between sends the service's last answer asked for while it is loaded (0: none;
        a transport that keeps records in this process never hints). The worker waits at
        least this long between cycles.
    """

    url: str | None = None
    flush_hint: float = 0.0

    def __init__(self) -> None:
        self.stats = {"sent": 0, "posts": 0, "rejected": 0}

    @property
    def judges(self) -> bool:
        """Verdicts beyond the NaN check come from here (the service, in-process detectors)."""
        return False

    @property
    def waiting(self) -> int:
        """Messages (metadata, action reports) queued and not yet sent."""
        return 0

    # ------------------------------------------------------------ worker thread
    def accept(self, records: list[dict[str, Any]]) -> list[str]:
        """Take one cycle's resolved records (in the worker's thread); return the encoded lines
        the worker keeps for :meth:`send` (none when nothing leaves the process)."""
        return []

    def send(self, spool: Spool) -> None:
        """Send what waits, queued messages first, then ``spool``'s records oldest first, each
        removed only once delivered, then the closing metadata (:meth:`close_run`) once none is
        left. Raise :class:`ServiceError` to be retried later."""

    def abort(self) -> bool:
        """From another thread, at exit: cut short a request under way. True when there may be
        one (the worker's thread is then worth waiting for a moment longer)."""
        return False

    # ------------------------------------------------------------ the Monitor
    def open_run(self, meta: dict[str, Any]) -> None:
        """The run starts (or starts again in a forked child): announce it with its metadata,
        at the worker's first cycle, before any record."""

    def set_meta(self, meta: dict[str, Any]) -> bool:
        """The run's whole metadata changed mid-run. True when the worker has work for it now (a
        message waits; new metadata for the in-process detectors)."""
        return False

    def report_action(self, entry: dict[str, Any]) -> bool:
        """An action the Actor applied (or would have, in dry-run). True when a message now waits."""
        return False

    def close_run(self, meta: dict[str, Any]) -> bool:
        """The run ends: its final metadata (``status`` finished), sent after its last records
        where they travel (when many runs close at once, their steps come first; the status is
        what may miss the exit's deadline). True when a message now waits."""
        return self.set_meta(meta)

    def checkpoint(self, step: int) -> None:
        """A checkpoint was saved after ``step`` steps (in-process detectors keep their state)."""

    def rewind(self, to_step: int) -> None:
        """The run was rolled back to ``to_step`` (in-process detectors return to that state)."""

    def for_child(self) -> Transport:
        """The transport a forked child (``in_child="fresh"``) uses: one holding no connection
        or message of the parent's. In-process ones carry on as they are."""
        return self

    def finish(self, spool: Spool, buffered: int, worker_stuck: bool) -> str | None:
        """The end of the run, once the worker stopped (or gave up waiting for it): close what
        is open, keep what was not delivered. Returns a warning for the user, or None."""
        return None


class NoTransport(Transport):
    """Nothing leaves the process and no detector runs: the NaN check of ``log()`` is all (no
    URL and numpy cannot be imported, or a rank of a distributed job that does not report)."""


class LocalTransport(Transport):
    """The detectors in this process (:class:`~.local.LocalEngine`), for a run without a URL.

    Each batch of records is judged in the worker's thread and the verdict handed to
    ``on_verdict``. If the engine raises, it is switched off with one warning and the run goes
    on with the NaN check alone (:attr:`judges` turns False).
    """

    def __init__(self, engine: LocalEngine, on_verdict: VerdictSink) -> None:
        super().__init__()
        self.engine = engine
        self._on_verdict = on_verdict
        self._failed_warned = False

    @property
    def judges(self) -> bool:
        return self.engine.available

    def accept(self, records: list[dict[str, Any]]) -> list[str]:
        engine = self.engine
        if engine.available and (records or engine.meta_pending):
            try:
                alerts, rec, health = engine.update(records)
                self._on_verdict(alerts, rec, health, True)
            except Exception as e:
                engine.available = False
                if not self._failed_warned:
                    self._failed_warned = True
                    warnings.warn(f"losswatch: local detectors failed and were switched off (the NaN "
                                  f"check goes on): {e!r}", RuntimeWarning, stacklevel=2)
        return []

    # open_run: nothing to do, the engine was built with the run's metadata
    def set_meta(self, meta: dict[str, Any]) -> bool:
        self.engine.set_meta(meta)  # applied in the worker's thread, at its next cycle
        return True  # wake it: the new metadata may resolve alerts now, not at the next record

    def send(self, spool: Spool) -> None:
        if self.engine.meta_pending:  # new metadata and no record since: its verdict now
            self.accept([])

    @property
    def waiting(self) -> int:
        return int(self.engine.available and self.engine.meta_pending)  # a flush waits for it

    def checkpoint(self, step: int) -> None:
        self.engine.snapshot_at(step)

    def rewind(self, to_step: int) -> None:
        self.engine.rewind_to(to_step)


def make_transport(url: str | None, *, run_id: str, project: str | None, meta: dict[str, Any],
                   token: str | None, timeout: float, batch_size: int, reports: bool,
                   on_verdict: VerdictSink) -> Transport:
    """The run's transport: HTTP to ``url``, else the in-process detectors when they can be
    imported, else none. ``reports``: False for a rank that leaves reporting to rank 0 (it
    neither sends nor detects)."""
    if not reports:
        return NoTransport()
    if url:
        from .http import HttpTransport

        return HttpTransport(url, run_id=run_id, project=project, token=token, timeout=timeout,
                             batch_size=batch_size, on_verdict=on_verdict)
    from .local import LocalEngine

    engine = LocalEngine(run_id, meta)
    return LocalTransport(engine, on_verdict) if engine.available else NoTransport()
