"""The store interface: where runs, step series, alerts, action reports and detector state live.

Two implementations: :mod:`losswatch.service.stores.memory` (embedded default, ``memory://``) and
:mod:`losswatch.service.stores.redis` (``redis://host:port/db``, shared by service replicas).
Pick one with :func:`open_store`.

Stores keep data; they do not detect. The ingest pipeline (:mod:`losswatch.service.pipeline`)
classifies a batch, runs the detectors and builds the alerts and the summary; a store only
**loads** a run's versioned snapshot and **commits** a change to it (:class:`SnapshotStore`):

1. ``load(project, run_id)`` returns the run's :class:`Snapshot`: its version (0 for a run that
   does not exist), the detector state of that version (``Engine.to_bytes()``; the store never
   looks inside), the highest step stored in the run's current attempt and the run's timeline
   (the pipeline's bytes about attempts, :mod:`losswatch.service.attempts`; opaque here too).
2. ``commit(change)`` applies a :class:`RunCommit` atomically with respect to every other caller
   of any replica, and only if the run's version is still ``change.expected_version``
   (compare-and-set): then it returns :class:`Committed` (the new version is the expected one + 1);
   otherwise it writes nothing and returns the current :class:`Snapshot`, from which the
   pipeline recomputes and retries. All or nothing: if ``commit`` raises (e.g.
   :class:`StoreUnavailable`), none of the change is visible, so the client can retry the whole
   batch safely (steps already stored come back as duplicates, which is harmless).
3. A commit writes the steps (in-order ones as given; a *late* step, at or below the stored
   ``last_step``, only if it is not stored yet: the store tells which), the detector state, the
   changed alerts (same id = replace; ``acknowledged`` is kept; the store records when each was
   first raised), the summary, and the notification claims: a claim is won by the first commit
   that makes it, so exactly one replica sends each notification. Nothing else already stored
   is modified.
   Steps go to the series of the attempt ``change.attempt`` (each attempt of a run has its own
   series, with its own raw window and downsampled levels; attempt 1 is the run's series as it
   always was). ``last_step`` is the current attempt's.
4. Store failures are raised as :class:`StoreUnavailable` (the API answers 503 + Retry-After);
   nothing else may escape for a reachable store except programming errors.

Values travel as JSON-safe dicts (alerts, action reports: the shape of ``Alert.to_dict()``) and as
:class:`Columns` (step series), so a store can serialise them without knowing the detector types.
"""

from __future__ import annotations

import abc
import bisect
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

# the record's value fields, stored in this order after step (then ts, extra); the schema, not the detectors
from losswatch.detectors.wire import VALUE_FIELDS as VALUE_FIELDS

from ..attempts import timeline_spans

if TYPE_CHECKING:
    from ..lr.policy_store import PolicyStore

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


def sorted_contains(sorted_steps: list[int], step: int) -> bool:
    """Membership in a sorted list by bisection (no per-run set needed)."""
    i = bisect.bisect_left(sorted_steps, step)
    return i < len(sorted_steps) and sorted_steps[i] == step


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
    # the run's attempts, oldest first: {"attempt", "start" (None: the run's first step), "rewound_at"}
    attempts: list[dict[str, Any]] = field(default_factory=lambda: [{"attempt": 1, "start": None,
                                                                     "rewound_at": None}])

    @property
    def attempt(self) -> int:
        """The current attempt (1 until the run was first rewound)."""
        return self.attempts[-1]["attempt"]


@dataclass(slots=True)
class Snapshot:
    """A run as of ``version`` (0: the run does not exist yet)."""

    version: int
    engine_state: bytes | None      # the detectors' state of that version (Engine.to_bytes); None: none yet
    last_step: int | None           # the highest step stored in the current attempt
    timeline: bytes | None = None   # the pipeline's bytes about attempts (None: none yet)


@dataclass(slots=True)
class Advice:
    """What the detectors say about a run after a batch: its summary's health, recommendation,
    latest values (None: the batch had no in-order step) and active alerts (None: unchanged)."""

    health: str
    recommendation: dict[str, Any] | None
    last: dict[str, float | None] | None
    active_alerts: list[dict[str, Any]] | None


@dataclass(slots=True)
class RunCommit:
    """Everything one ingest (or one metadata change) writes to a run, applied only if the run is
    still at ``expected_version`` (see the module docstring)."""

    project: str
    run_id: str
    expected_version: int
    now: float                                  # wall-clock seconds: last write, alert times
    engine: Any                                 # the new detector state: an object with to_bytes()
    cols: Columns = field(default_factory=Columns)
    in_order: list[int] = field(default_factory=list)   # positions above last_step, steps increasing
    late: list[int] = field(default_factory=list)       # positions at or below it: stored if absent
    batch_duplicates: int = 0                   # repeats inside the batch or of its in-order steps
    alerts: list[dict[str, Any]] = field(default_factory=list)   # changed alerts (Alert.to_dict + project, updated_at)
    advice: Advice | None = None                # None: the summary's health and advice stay
    meta: dict[str, Any] | None = None          # replaces the metadata (and refreshes retention)
    claims: list[str] = field(default_factory=list)   # notification keys this change claims
    attempt: int = 1                            # the attempt whose series the steps go to
    timeline: bytes | None = None               # replaces the run's timeline (None: unchanged)
    attempts: list[dict[str, Any]] | None = None   # replaces the summary's attempts (None: unchanged)


@dataclass(slots=True)
class Committed:
    """What a commit did beyond what the pipeline knew."""

    version: int
    stored_late: int                            # late steps stored (out of order)
    duplicate_late: int                         # late steps already stored
    alerts: list[tuple[float, float | None, bool]]   # per RunCommit.alerts: raised_at, acknowledged_at, first raised now
    claimed: list[bool]                         # per RunCommit.claims: won by this commit


class SnapshotStore(Protocol):
    """The two calls the ingest pipeline needs of a store (the module docstring's contract)."""

    async def load(self, project: str, run_id: str) -> Snapshot:
        ...

    async def commit(self, change: RunCommit) -> Committed | Snapshot:
        ...

    async def get_run(self, run_id: str, *, project: str = DEFAULT_PROJECT) -> RunSummary | None:
        ...

    async def read_series(self, run_id: str, start: int | None = None, end: int | None = None, *,
                          project: str = DEFAULT_PROJECT, attempt: int | None = None) -> Columns | None:
        ...


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
    #: the LR policies of ``/v1/policies``, kept in this store (every replica on it serves the same)
    policies: PolicyStore

    # --- writes (the ingest pipeline's; see SnapshotStore) -----------------------------------
    @abc.abstractmethod
    async def load(self, project: str, run_id: str) -> Snapshot:
        """The run's snapshot (version 0, no state, for a run that does not exist)."""

    @abc.abstractmethod
    async def commit(self, change: RunCommit) -> Committed | Snapshot:
        """Apply ``change`` if the run is still at its expected version, else return the current
        snapshot and write nothing. Creates the run (project, run_id) if absent."""

    @abc.abstractmethod
    async def ack_alert(self, alert_id: str, *, project: str = DEFAULT_PROJECT,
                        now: float | None = None) -> dict[str, Any] | None:
        """Mark an alert acknowledged (kept across later updates); None if unknown."""

    @abc.abstractmethod
    async def record_action(self, run_id: str, report: dict[str, Any], *,
                            project: str = DEFAULT_PROJECT) -> dict[str, Any]:
        """Append a client's action report to the run's alert history; returns it as stored.
        Raises KeyError if the run does not exist."""

    # --- reads ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def get_run(self, run_id: str, *, project: str = DEFAULT_PROJECT) -> RunSummary | None:
        ...

    @abc.abstractmethod
    async def list_runs(self, *, projects: Iterable[str] | None = None, health: str | None = None,
                        active_since: float | None = None) -> list[RunSummary]:
        """Runs sorted by (run_id, project); ``active_since``: last_seen >= it (wall-clock seconds)."""

    async def read_series(self, run_id: str, start: int | None = None, end: int | None = None, *,
                          project: str = DEFAULT_PROJECT, attempt: int | None = None) -> Columns | None:
        """Stored steps with start <= step <= end, sorted by step; None if the run is unknown.

        ``attempt``: that attempt's steps alone (an empty series for one the run does not have);
        None: the run's current timeline, each earlier attempt up to where a later one went back
        to, then the latest attempt (:func:`~losswatch.service.attempts.timeline_spans`)."""
        if attempt is not None:
            return await self.read_attempt(run_id, start, end, project=project, attempt=attempt)
        s = await self.get_run(run_id, project=project)
        if s is None:
            return None
        out = Columns()
        for a, lo, hi in timeline_spans(s.attempts, start, end):
            part = await self.read_attempt(run_id, lo, hi, project=project, attempt=a)
            for n in Columns.__slots__:
                getattr(out, n).extend(getattr(part, n) if part is not None else ())
        return out

    @abc.abstractmethod
    async def read_attempt(self, run_id: str, start: int | None = None, end: int | None = None, *,
                           project: str = DEFAULT_PROJECT, attempt: int = 1) -> Columns | None:
        """One attempt's stored steps with start <= step <= end, sorted by step; None if the run
        is unknown (an attempt it does not have: an empty series)."""

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
    ``memory://`` (default), ``redis://host:port/db`` or ``redis+cluster://host:port`` (a Redis
    Cluster, found from one of its nodes), with the settings' retention, raw window and timeouts."""
    url = settings.store_url or "memory://"
    if url.startswith("memory://") or url == "memory":
        from .memory import MemoryStore

        return MemoryStore(retention_seconds=settings.retention_seconds, raw_chunks=settings.raw_chunks)
    if url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
        from .redis import RedisStore

        return RedisStore(url, retention_seconds=settings.retention_seconds, raw_chunks=settings.raw_chunks,
                          wait_replicas=settings.redis_wait_replicas,
                          wait_timeout_ms=settings.redis_wait_timeout_ms,
                          timeout_ms=settings.store_timeout_ms, queue_timeout_ms=settings.store_queue_ms,
                          max_connections=settings.redis_connections)
    raise ValueError(f"unsupported store URL {url!r}: use memory://, redis://host:port/db or "
                     f"redis+cluster://host:port (one node of a Redis Cluster)")
