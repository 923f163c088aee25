"""The store interface: where runs, step series, alerts, action reports and detector state live.

Two implementations: :mod:`losswatch.service.stores.memory` (embedded default, ``memory://``) and
:mod:`losswatch.service.stores.redis` (``redis://host:port/db``, shared by service replicas).
Pick one with :func:`open_store`.

Atomicity contract (every implementation must keep it)
------------------------------------------------------
1. ``ingest(run_id, cols, ...)`` is atomic per run with respect to every other caller of any
   replica: between reading the run's stored steps and detector state and writing the new steps,
   the new detector state (``Engine.to_bytes()``), the changed alerts and the run summary, no other
   ``ingest`` for the same run may interleave (memory: one ``asyncio.Lock`` per run; Redis: a
   per-run lock or an optimistic WATCH/MULTI transaction retried on conflict). Consequence:
   concurrent batches for one run neither lose nor double-count a step: each (run_id, step) is
   stored exactly once and counted once as accepted, every repeat is counted as a duplicate.
2. All or nothing: if ``ingest`` raises (e.g. :class:`StoreUnavailable`), none of the batch's
   steps, state or alerts were made visible, so the client can retry the whole batch safely
   (steps already stored come back as duplicates, which is harmless).
3. Nothing already stored is ever modified by ingest except: the detector state, the run summary,
   and alerts the engine reports as changed (same id = replace; ``acknowledged`` is kept).
4. Store failures are raised as :class:`StoreUnavailable` (the API answers 503 + Retry-After);
   nothing else may escape for a reachable store except programming errors.

Step semantics (the shared helper :func:`classify_steps` implements them so every store agrees):
a step already stored (or repeated earlier in the same batch) is a *duplicate*: not stored again.
A new step lower than the highest step seen before it (stored or earlier in the batch) is
*out of order*: stored in its place in the series, but the detectors only see the in-order stream
(the engine ignores ``step <= last_step``), so it never raises an alert.

Values travel as JSON-safe dicts (alerts, action reports: the shape of ``Alert.to_dict()``) and as
:class:`Columns` (step series), so a store can serialise them without knowing the detector types.
"""

from __future__ import annotations

import abc
import bisect
import itertools
import operator
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from losswatch.detectors.wire import (
    VALUE_FIELDS,  # stored in this order, after step; then ts, extra
)

DEFAULT_PROJECT = "default"   # the project of a run when a request names none (auth off)


class StoreError(Exception):
    """Base of the errors a store raises on purpose."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or failed mid-operation (e.g. Redis is down).

    ``retry_after`` (seconds) is what the API puts in its Retry-After header; None = the
    service's LOSSWATCH_RETRY_AFTER.
    """

    def __init__(self, message: str = "store unavailable", retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(slots=True)
class Columns:
    """A batch or a slice of a step series, column-wise (the fast path never builds Records).

    All lists have the same length. ``None`` = not logged; ``float('nan')`` = a NaN value.
    ``extra`` holds one dict (or None) per step.
    """

    step: list[int] = field(default_factory=list)
    loss: list[float | None] = field(default_factory=list)
    grad_norm: list[float | None] = field(default_factory=list)
    lr: list[float | None] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    ts: list[float | None] = field(default_factory=list)
    extra: list[dict[str, float] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.step)

    def take(self, idx: Sequence[int]) -> "Columns":
        """The rows at positions ``idx`` (in that order)."""
        return Columns(
            step=[self.step[i] for i in idx],
            loss=[self.loss[i] for i in idx],
            grad_norm=[self.grad_norm[i] for i in idx],
            lr=[self.lr[i] for i in idx],
            val_loss=[self.val_loss[i] for i in idx],
            ts=[self.ts[i] for i in idx],
            extra=[self.extra[i] for i in idx],
        )


@dataclass(slots=True)
class StepSplit:
    """How :func:`classify_steps` sorted a batch: positions into the batch."""

    new: list[int]            # positions to store (first occurrence of each new step)
    in_order: list[int]       # subset of ``new`` the detectors see (strictly increasing steps)
    duplicates: int
    out_of_order: int


def classify_steps(steps: Sequence[int], is_stored: Callable[[int], bool], last_step: int | None) -> StepSplit:
    """Split a batch into new / in-order / duplicate / out-of-order steps.

    Parameters
    ----------
    steps : the batch's steps in arrival order.
    is_stored : tells whether a step is already stored for the run (called only for steps that are
        not above the highest step seen, so an in-order stream never pays for the look-up).
    last_step : the highest step stored so far, or None for a new run.

    Examples
    --------
    >>> s = classify_steps([5, 6, 6, 3, 7], lambda k: k in {1, 2, 3, 4, 5}, 5)
    >>> s.new, s.in_order, s.duplicates, s.out_of_order
    ([1, 4], [1, 4], 3, 0)
    >>> s = classify_steps([10, 8, 11], lambda k: False, None)
    >>> s.new, s.in_order, s.duplicates, s.out_of_order
    ([0, 1, 2], [0, 2], 0, 1)
    """
    high = -1 if last_step is None else last_step
    n = len(steps)
    # the usual batch: strictly increasing and after everything stored (checked at C speed)
    if n and steps[0] > high and all(map(operator.lt, steps, itertools.islice(steps, 1, None))):
        everything = list(range(n))
        return StepSplit(new=everything, in_order=everything, duplicates=0, out_of_order=0)
    new: list[int] = []
    in_order: list[int] = []
    seen_here: set[int] = set()
    dups = ooo = 0
    for i, s in enumerate(steps):
        if s > high:
            new.append(i)
            in_order.append(i)
            seen_here.add(s)
            high = s
        elif s in seen_here or is_stored(s):
            dups += 1
        else:
            new.append(i)
            seen_here.add(s)
            ooo += 1
    return StepSplit(new=new, in_order=in_order, duplicates=dups, out_of_order=ooo)


def sorted_contains(sorted_steps: list[int], step: int) -> bool:
    """Membership in a sorted list by bisection (no per-run set needed)."""
    i = bisect.bisect_left(sorted_steps, step)
    return i < len(sorted_steps) and sorted_steps[i] == step


@dataclass(slots=True)
class IngestResult:
    """What one ``ingest`` call did."""

    accepted: int
    duplicates: int
    out_of_order: int
    alerts: list[dict[str, Any]]              # alerts changed by this batch (Alert.to_dict + times)
    new_alert_ids: list[str]                  # ids first raised by this batch (episodes)
    recommendation: dict[str, Any] | None     # Action.to_dict() or None
    health: str                               # ok | warning | critical
    project: str


@dataclass(slots=True)
class RunSummary:
    """One run as listed by the API and exported to Prometheus.

    ``last`` holds the latest in-order values (loss, grad_norm, lr, val_loss: NaN stays NaN;
    a field never logged is None) and ``last_step`` the highest step stored.
    """

    run_id: str
    project: str
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    last_seen: float | None = None           # wall time of the last accepted batch
    last_step: int | None = None
    n_steps: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    last: dict[str, float | None] = field(default_factory=dict)
    health: str = "ok"
    active_alerts: list[dict[str, Any]] = field(default_factory=list)
    recommendation: dict[str, Any] | None = None


class Store(abc.ABC):
    """The async store interface (see the module docstring for the atomicity contract).

    Run identity: a run is named by (project, run_id); two projects may hold the same run id and
    are two unrelated runs. Every method on one run takes ``project`` (the API resolves it from
    the request and the token, :meth:`~losswatch.service.auth.Scope.project`; callers without a
    project use :data:`DEFAULT_PROJECT`). Alert ids are unique within a run's project only, so
    alert look-ups take the project too. ``projects`` arguments of the listings, when not None,
    restrict results to runs of those projects (the API passes the caller's token scope);
    listed runs and alerts carry their ``project``.
    """

    url: str = ""

    # --- writes ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def ingest(self, run_id: str, cols: Columns, *, project: str = DEFAULT_PROJECT,
                     now: float | None = None) -> IngestResult:
        """Store a batch and run the detectors on its in-order part, atomically per run.

        Creates the run (project, run_id) if absent."""

    @abc.abstractmethod
    async def put_meta(self, run_id: str, meta: dict[str, Any], *, project: str = DEFAULT_PROJECT,
                       now: float | None = None) -> RunSummary:
        """Create the run or replace its metadata; passes it to the engine (``set_meta``)."""

    @abc.abstractmethod
    async def ack_alert(self, alert_id: str, *, project: str = DEFAULT_PROJECT,
                        now: float | None = None) -> dict[str, Any] | None:
        """Mark an alert acknowledged (kept across later updates); None if unknown."""

    @abc.abstractmethod
    async def record_action(self, run_id: str, report: dict[str, Any], *,
                            project: str = DEFAULT_PROJECT) -> dict[str, Any]:
        """Append a client's action report to the run's alert history; returns it as stored.
        Raises KeyError if the run does not exist."""

    @abc.abstractmethod
    async def claim_notification(self, key: str, ttl: int) -> bool:
        """True for the first caller of any replica to claim ``key`` within ``ttl`` seconds, False
        for every later one: the replica that claims a notification sends it."""

    # --- reads ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def get_run(self, run_id: str, *, project: str = DEFAULT_PROJECT) -> RunSummary | None:
        ...

    @abc.abstractmethod
    async def list_runs(self, *, projects: Iterable[str] | None = None, health: str | None = None,
                        active_since: float | None = None) -> list[RunSummary]:
        """Runs sorted by (run_id, project); ``active_since``: last_seen >= it (wall-clock seconds)."""

    @abc.abstractmethod
    async def read_series(self, run_id: str, start: int | None = None, end: int | None = None, *,
                          project: str = DEFAULT_PROJECT) -> Columns | None:
        """Stored steps with start <= step <= end, sorted by step; None if the run is unknown."""

    @abc.abstractmethod
    async def list_alerts(self, *, run_id: str | None = None, project: str = DEFAULT_PROJECT,
                          projects: Iterable[str] | None = None, kind: str | None = None,
                          severity: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        """Alerts (newest update first), each with its ``project``: of the run (project, run_id)
        when ``run_id`` is given, else of every run (of ``projects``); ``since``: updated_at >=
        since (wall-clock seconds)."""

    @abc.abstractmethod
    async def get_alert(self, alert_id: str, *, project: str = DEFAULT_PROJECT) -> dict[str, Any] | None:
        ...

    @abc.abstractmethod
    async def list_actions(self, run_id: str, *, project: str = DEFAULT_PROJECT) -> list[dict[str, Any]]:
        """The run's action reports, oldest first."""

    # --- lifecycle ------------------------------------------------------------------------
    @abc.abstractmethod
    async def ping(self) -> None:
        """Return if the store is usable, else raise :class:`StoreUnavailable` saying why."""

    async def prepare(self) -> None:
        """Bring data written by an earlier version to the current layout; the service runs it
        in the background from its start (default: nothing to do)."""

    async def close(self) -> None:
        """Release connections (default: nothing to do)."""


# --- helpers every store shares ------------------------------------------------------------

def new_engine(run_id: str, meta: dict[str, Any] | None):
    """A fresh detector engine (imported lazily: the stores module stays importable alone)."""
    from losswatch.detectors import Engine

    return Engine(run_id=run_id, meta=meta or None)


def load_engine(state: bytes):
    """An engine restored from ``Engine.to_bytes()``."""
    from losswatch.detectors import Engine

    return Engine.from_bytes(state)


def column_array(col: list[float | None]):
    """(float64 values with NaN where not logged, mask of logged entries) without a Python
    loop in the common case of a column that is fully logged or not logged at all."""
    import numpy as np

    n = len(col)
    if None not in col:
        return np.array(col, dtype=np.float64), np.ones(n, dtype=bool)
    if col.count(None) == n:
        return np.full(n, np.nan), np.zeros(n, dtype=bool)
    # numpy turns None into NaN with dtype float64; the mask keeps "not logged" apart from NaN
    return np.array(col, dtype=np.float64), np.array([v is not None for v in col], dtype=bool)


def to_batch(cols: Columns):
    """The detectors' Batch for validated columns (built directly: ``Batch.from_columns``
    re-validates every value in Python, which the ingest path has just done)."""
    import numpy as np

    from losswatch.detectors import Batch

    return Batch(np.array(cols.step, dtype=np.int64),
                 {f: column_array(getattr(cols, f)) for f in VALUE_FIELDS})


def run_engine(engine, cols: Columns, in_order: list[int]):
    """Feed the in-order rows to the engine as one batch (``Engine.update_batch`` picks the
    one-record or the vectorised path by the batch's size).

    Returns (changed alerts as Alert objects, recommendation dict or None, health).
    """
    changed = []
    if in_order:
        sub = cols if len(in_order) == len(cols) else cols.take(in_order)
        changed = engine.update_batch(to_batch(sub))
    rec = engine.recommendation
    return changed, (rec.to_dict() if rec is not None else None), engine.health


def alert_record(alert, previous: dict[str, Any] | None, now: float, project: str) -> dict[str, Any]:
    """The stored form of an alert: ``Alert.to_dict()`` plus its run's project and
    raised_at/updated_at; an earlier acknowledgement survives the update."""
    d = alert.to_dict()
    d["project"] = project
    d["raised_at"] = previous["raised_at"] if previous else now
    d["updated_at"] = now
    if previous and previous.get("acknowledged"):
        d["acknowledged"] = True
        d["acknowledged_at"] = previous.get("acknowledged_at")
    return d


def last_values(cols: Columns, i: int, engine: Any) -> dict[str, float | None]:
    """The run's latest values for its summary and per-run gauges: the record at ``i`` and the
    series the engine keeps about the run (its spike rate)."""
    return {**{f: getattr(cols, f)[i] for f in VALUE_FIELDS}, "spike_rate": engine.spike_rate}


def wall_now(now: float | None) -> float:
    return time.time() if now is None else now


def alert_matches(alert: dict[str, Any], kind: str | None, severity: str | None, since: float | None) -> bool:
    """The alert filters of GET /v1/alerts and /v1/runs/{id}/alerts, the same for every store."""
    return ((kind is None or alert["kind"] == kind)
            and (severity is None or alert["severity"] == severity)
            and (since is None or alert["updated_at"] >= since))


def summary_matches(s: RunSummary, projects: set[str] | None, health: str | None,
                    active_since: float | None) -> bool:
    """The run filters of GET /v1/runs (``projects`` None = any), the same for every store."""
    return ((projects is None or s.project in projects)
            and (health is None or s.health == health)
            and (active_since is None or (s.last_seen is not None and s.last_seen >= active_since)))


def open_store(settings) -> Store:
    """The store for ``settings.store_url`` (a :class:`~losswatch.service.settings.Settings`):
    ``memory://`` (default) or ``redis://host:port/db``, with the settings' retention, raw
    window and timeouts."""
    url = settings.store_url or "memory://"
    if url.startswith("memory://") or url == "memory":
        from .memory import MemoryStore

        return MemoryStore(retention_seconds=settings.retention_seconds, raw_chunks=settings.raw_chunks)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisStore

        return RedisStore(url, retention_seconds=settings.retention_seconds, raw_chunks=settings.raw_chunks,
                          wait_replicas=settings.redis_wait_replicas,
                          wait_timeout_ms=settings.redis_wait_timeout_ms,
                          engine_cache=settings.redis_engine_cache,
                          timeout_ms=settings.store_timeout_ms)
    raise ValueError(f"unsupported store URL {url!r}: use memory:// or redis://host:port/db")
