"""The ingest pipeline: the one place where a batch of steps (or a metadata change) becomes stored
steps, detector state, alerts, a run summary and notifications, whatever the store.

For each batch of a run (docs/storage.md, "The ingest pipeline"):

1. **classify** the steps against the run's snapshot (:func:`split_batch`): steps above the
   highest stored step, in increasing order, go to the detectors; a repeat inside the batch is a
   duplicate; a step at or below the highest stored one is *late*: the store keeps it if it is
   not stored yet (out of order, never seen by the detectors), else counts it a duplicate;
2. **detect**: feed the in-order steps to the run's detector engine, restored from the
   snapshot's state (or kept from this replica's last batch of the run, while its version is
   the stored one);
3. **build** the changed alerts, the advice (health, recommendation, latest values with the
   spike rate, active alerts) and the notification claims of alerts that notify;
4. **commit** it all with compare-and-set on the snapshot's version (:class:`SnapshotStore`).
   If another replica committed first, the store returns the current snapshot: reload and run
   again from step 1 (at most ``MAX_TRIES`` times, then a :class:`StoreUnavailable`: 503 with
   Retry-After).

A metadata change goes the same way: the engine is rebuilt for the new metadata
(``Engine.set_meta``) and committed with it under the same version check.

Within one process, batches of one run are serialised by a per-run lock (the cached engine is
mutated in place); across replicas the version check orders them. A replica keeps the engines of
the runs it served last (``engine_cache``), so the usual batch costs one store call (the commit);
for a minute after a conflict on a run it loads the snapshot first, so that no detector work is
spent on a state that is probably stale.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

from losswatch.detectors import Batch, Engine
from losswatch.detectors.wire import VALUE_FIELDS

from .notify import dedupe_key, notifies
from .settings import Settings
from .stores.base import (
    DEFAULT_PROJECT,
    Advice,
    Columns,
    Committed,
    RunCommit,
    RunSummary,
    Snapshot,
    SnapshotStore,
    StoreUnavailable,
    column_array,
    wall_now,
)

RunKey = tuple[str, str]       # (project, run_id)


@dataclass(slots=True)
class StepSplit:
    """How :func:`split_batch` sorted a batch: positions into the batch."""

    in_order: list[int]       # steps above everything stored, strictly increasing: the detectors see them
    late: list[int]           # first occurrences of steps at or below the stored last step
    duplicates: int           # repeats inside the batch


def split_batch(steps: Sequence[int], last_step: int | None) -> StepSplit:
    """Split a batch by the run's highest stored step ``last_step`` (None: a new run).

    A step higher than every step before it (stored or earlier in the batch) is in order; a step
    repeated in the batch is a duplicate; any other step is late (the store decides whether it is
    new or a duplicate of a stored step).

    Examples
    --------
    >>> s = split_batch([5, 6, 6, 3, 7], 5)
    >>> s.in_order, s.late, s.duplicates
    ([1, 4], [0, 3], 1)
    >>> s = split_batch([10, 8, 11, 8], None)
    >>> s.in_order, s.late, s.duplicates
    ([0, 2], [1], 1)
    """
    high = -1 if last_step is None else last_step
    n = len(steps)
    # the usual batch: strictly increasing and after everything stored (checked at C speed)
    if n and steps[0] > high and all(map(operator.lt, steps, itertools.islice(steps, 1, None))):
        return StepSplit(in_order=list(range(n)), late=[], duplicates=0)
    in_order: list[int] = []
    late: list[int] = []
    seen_here: set[int] = set()
    dups = 0
    for i, s in enumerate(steps):
        if s > high:
            in_order.append(i)
            high = s
        elif s in seen_here:
            dups += 1
            continue
        else:
            late.append(i)
        seen_here.add(s)
    return StepSplit(in_order=in_order, late=late, duplicates=dups)


@dataclass(slots=True)
class IngestResult:
    """What one batch did."""

    accepted: int
    duplicates: int
    out_of_order: int
    alerts: list[dict[str, Any]]              # alerts changed by this batch (Alert.to_dict + times)
    new_alert_ids: list[str]                  # ids first raised by this batch (episodes)
    recommendation: dict[str, Any] | None     # Action.to_dict() or None
    health: str                               # ok | warning | critical
    project: str
    notify: list[dict[str, Any]] = field(default_factory=list)   # alerts this replica claimed to send


def to_batch(cols: Columns) -> Batch:
    """The detectors' Batch for validated columns (built directly: ``Batch.from_columns``
    re-validates every value in Python, which the ingest path has just done)."""
    import numpy as np

    return Batch(np.array(cols.step, dtype=np.int64),
                 {f: column_array(getattr(cols, f)) for f in VALUE_FIELDS})


def run_engine(engine: Engine, cols: Columns, in_order: list[int]):
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


def last_values(cols: Columns, i: int, engine: Engine) -> dict[str, float | None]:
    """The run's latest values for its summary and per-run gauges: the record at ``i`` and the
    series the engine keeps about the run (its spike rate)."""
    return {**{f: getattr(cols, f)[i] for f in VALUE_FIELDS}, "spike_rate": engine.spike_rate}


class _Cached:
    """A run's engine as of version ``v`` (valid while nobody else committed)."""

    __slots__ = ("v", "engine", "last_step")

    def __init__(self, v: int, engine: Engine, last_step: int | None) -> None:
        self.v, self.engine, self.last_step = v, engine, last_step


class IngestPipeline:
    """Classify, detect, commit with compare-and-set, retry on conflict (module docstring).

    Parameters
    ----------
    store : a :class:`SnapshotStore` (both stores are).
    engine_cache : detector engines kept in this process, the runs served last (~11 KB each); a
        run not in it costs one more store call (and restoring its state).
    """

    MAX_TRIES = 50          # commits tried per batch before answering 503 (other writers kept winning)
    CONTENDED_S = 60.0      # after a conflict, load before detecting for this long

    def __init__(self, store: SnapshotStore, *, engine_cache: int = Settings.redis_engine_cache) -> None:
        self.store = store
        self._cache: OrderedDict[RunKey, _Cached] = OrderedDict()
        self._cache_max = engine_cache
        self._locks: weakref.WeakValueDictionary[RunKey, asyncio.Lock] = weakref.WeakValueDictionary()
        self._contended: dict[RunKey, float] = {}   # runs another replica wrote lately: monotonic time
        self.conflicts = 0                          # commits refused for a newer version (diagnostics, tests)

    # --- the two entry points -------------------------------------------------------------
    async def ingest(self, run_id: str, cols: Columns, *, project: str = DEFAULT_PROJECT,
                     now: float | None = None) -> IngestResult:
        """Store a batch and run the detectors on its in-order part; creates the run if absent."""
        now = wall_now(now)
        key = (project, run_id)
        async with self._lock(key):
            cached = await self._start(key)
            for _ in range(self.MAX_TRIES):
                split = split_batch(cols.step, cached.last_step)
                engine = cached.engine
                changed, rec, health = run_engine(engine, cols, split.in_order)
                alerts = [{**a.to_dict(), "project": project, "updated_at": now} for a in changed]
                notifying = [d for d in alerts if notifies(d)]
                last = last_values(cols, split.in_order[-1], engine) if split.in_order else None
                active = [{**a.to_dict(), "project": project} for a in engine.active_alerts] if changed else None
                out = await self.store.commit(RunCommit(
                    project=project, run_id=run_id, expected_version=cached.v, now=now, engine=engine,
                    cols=cols, in_order=split.in_order, late=split.late, batch_duplicates=split.duplicates,
                    alerts=alerts, advice=Advice(health, rec, last, active),
                    claims=[dedupe_key(d) for d in notifying]))
                if isinstance(out, Snapshot):
                    cached = self._conflict(key, run_id, out)
                    continue
                new_last = cols.step[split.in_order[-1]] if split.in_order else cached.last_step
                self._keep(key, _Cached(out.version, engine, new_last))
                return _result(out, split, alerts, notifying, rec, health, project)
            raise StoreUnavailable(f"run {run_id!r} of project {project!r}: too many concurrent writers, retry")

    async def put_meta(self, run_id: str, meta: dict[str, Any], *, project: str = DEFAULT_PROJECT,
                       now: float | None = None) -> RunSummary:
        """Create the run or replace its metadata; the detectors are configured by it
        (``Engine.set_meta``), under the same version check as a batch."""
        now = wall_now(now)
        key = (project, run_id)
        async with self._lock(key):
            cached = await self._start(key, load=True)
            for _ in range(self.MAX_TRIES):
                cached.engine.set_meta(dict(meta))
                out = await self.store.commit(RunCommit(
                    project=project, run_id=run_id, expected_version=cached.v, now=now,
                    engine=cached.engine, meta=dict(meta)))
                if isinstance(out, Snapshot):
                    cached = self._conflict(key, run_id, out)
                    continue
                self._keep(key, _Cached(out.version, cached.engine, cached.last_step))
                break
            else:
                raise StoreUnavailable(f"run {run_id!r} of project {project!r}: too many concurrent writers, retry")
        s = await self.store.get_run(run_id, project=project)
        assert s is not None
        return s

    # --- engines ----------------------------------------------------------------------------
    async def _start(self, key: RunKey, *, load: bool = False) -> _Cached:
        """The run's engine to start from: this replica's, unless it is unknown here, another
        replica wrote the run lately, or ``load`` (then the stored snapshot)."""
        cached = self._cache.pop(key, None)   # popped: a batch that fails leaves no engine behind
        if (cached is None or load
                or (self._contended and self._contended.get(key, -1e9) > time.monotonic() - self.CONTENDED_S)):
            snap = await self.store.load(*key)
            if cached is None or cached.v != snap.version:
                cached = _restore(key[1], snap)
        return cached

    def _conflict(self, key: RunKey, run_id: str, snap: Snapshot) -> _Cached:
        """Another replica committed first: count it, mark the run contended, and start again
        from the snapshot the refused commit returned."""
        self.conflicts += 1
        self._contended[key] = time.monotonic()
        if len(self._contended) > 10_000:
            self._contended.pop(next(iter(self._contended)))
        return _restore(run_id, snap)

    def _keep(self, key: RunKey, c: _Cached) -> None:
        self._cache[key] = c                  # last: _start popped it
        while len(self._cache) > self._cache_max:
            self._cache.popitem(last=False)

    def _lock(self, key: RunKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


def _restore(run_id: str, snap: Snapshot) -> _Cached:
    engine = Engine.from_bytes(snap.engine_state) if snap.engine_state else Engine(run_id=run_id, meta=None)
    return _Cached(snap.version, engine, snap.last_step)


def _result(out: Committed, split: StepSplit, alerts: list[dict[str, Any]], notifying: list[dict[str, Any]],
            rec: dict[str, Any] | None, health: str, project: str) -> IngestResult:
    new_ids = []
    for d, (raised_at, acked_at, first) in zip(alerts, out.alerts):
        d["raised_at"] = raised_at
        if first:
            new_ids.append(d["id"])
        if acked_at is not None:
            d["acknowledged"] = True
            d["acknowledged_at"] = acked_at
    return IngestResult(
        accepted=len(split.in_order) + out.stored_late, duplicates=split.duplicates + out.duplicate_late,
        out_of_order=out.stored_late, alerts=alerts, new_alert_ids=new_ids, recommendation=rec,
        health=health, project=project, notify=[d for d, won in zip(notifying, out.claimed) if won])
