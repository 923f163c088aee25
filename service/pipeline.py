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

Attempts (:mod:`.attempts`): a checkpoint the metadata names keeps the detectors' state when the
records reach it; a rewind the metadata brings begins a new attempt at its first re-logged
record. A batch that holds both the last records of one attempt and the first of the next is
committed in two parts, each as above: the part before, then the new attempt (the detectors
back at the state kept at the rewind's checkpoint, the alerts raised since then resolved). If the
second part fails, the client sends the batch again: its first part is then duplicates.

Within one process, batches of one run are serialised by a per-run lock (the cached engine is
mutated in place); across replicas the version check orders them. A replica keeps the engines of
the runs it served last (``engine_cache``), so the usual batch costs one store call (the commit);
for a minute after a conflict on a run it loads the snapshot first, so that no detector work is
spent on a state that is probably stale.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import logging
import operator
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

from losswatch.detectors import Batch, Engine
from losswatch.detectors.wire import VALUE_FIELDS

from .attempts import MAX_ATTEMPTS, Timeline
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
    wall_now,
)

RunKey = tuple[str, str]       # (project, run_id)

log = logging.getLogger("losswatch.pipeline")


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
    """The detectors' Batch for validated columns: the lists as they are (``Batch.from_columns``
    re-validates every value in Python, which the ingest path has just done), numpy arrays only
    if the engine takes the vectorised path."""
    return Batch.from_lists(cols.step, *(getattr(cols, f) for f in VALUE_FIELDS))


def run_engine(engine: Engine, cols: Columns, in_order: list[int], timeline: Timeline | None = None):
    """Feed the in-order rows to the engine as one batch (``Engine.update_batch`` picks the
    one-record or the vectorised path by the batch's size). A checkpoint of ``timeline`` waiting
    for its state gets the engine's state before the first row at or past its step (the batch
    is fed in parts around it).

    Returns (changed alerts as Alert objects, recommendation dict or None, health, whether a
    checkpoint's state was kept).
    """
    changed = []
    kept = False
    if in_order:
        due = timeline.due_before(cols.step[in_order[-1]]) if timeline is not None and timeline.due else []
        if not due:
            sub = cols if len(in_order) == len(cols) else cols.take(in_order)
            changed = engine.update_batch(to_batch(sub))
        else:
            steps = [cols.step[i] for i in in_order]
            k = 0
            for c in due:
                j = bisect.bisect_left(steps, c)        # the rows before the checkpoint's step
                if j > k:
                    changed += engine.update_batch(to_batch(cols.take(in_order[k:j])))
                    k = j
                timeline.keep(c, engine.to_bytes())    # type: ignore[union-attr]
            if k < len(in_order):
                changed += engine.update_batch(to_batch(cols.take(in_order[k:])))
            kept = True
    rec = engine.recommendation
    return changed, (rec.to_dict() if rec is not None else None), engine.health, kept


def last_values(cols: Columns, i: int, engine: Engine) -> dict[str, float | None]:
    """The run's latest values for its summary and per-run gauges: the record at ``i`` and the
    series the engine keeps about the run (its spike rate)."""
    return {**{f: getattr(cols, f)[i] for f in VALUE_FIELDS}, "spike_rate": engine.spike_rate}


class _Cached:
    """A run's engine and timeline as of version ``v`` (valid while nobody else committed);
    ``last_step``: the highest step of the current attempt."""

    __slots__ = ("v", "engine", "last_step", "timeline")

    def __init__(self, v: int, engine: Engine, last_step: int | None, timeline: Timeline) -> None:
        self.v, self.engine, self.last_step, self.timeline = v, engine, last_step, timeline


@dataclass(slots=True)
class _Part:
    """One commit's worth of a batch: the rows ``lo:hi`` of it, in one attempt."""

    hi: int
    commit: RunCommit
    split: StepSplit
    below: int                    # rows below the attempt's start: an earlier attempt's, duplicates
    alerts: list[dict[str, Any]]
    notifying: list[dict[str, Any]]
    rec: dict[str, Any] | None
    health: str
    after: _Cached                # the run once committed (its version set then)


def same_meta(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same metadata as JSON says it: ``1``, ``1.0`` and ``true`` are three values (Python's
    ``==`` says one), key order is not a difference."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


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
        """Store a batch and run the detectors on its in-order part; creates the run if absent.
        A batch that begins a new attempt partway is committed in two parts (module docstring)."""
        now = wall_now(now)
        key = (project, run_id)
        async with self._lock(key):
            cached = await self._start(key)
            parts: list[tuple[_Part, Committed]] = []
            lo = 0
            while not parts or lo < len(cols):
                for _ in range(self.MAX_TRIES):
                    part = self._part(run_id, project, cached, cols, lo, now)
                    out = await self.store.commit(part.commit)
                    if isinstance(out, Snapshot):
                        cached = self._conflict(key, run_id, out)
                        continue
                    cached = part.after
                    cached.v = out.version
                    self._keep(key, cached)
                    parts.append((part, out))
                    lo = part.hi
                    break
                else:
                    raise StoreUnavailable(f"run {run_id!r} of project {project!r}: too many concurrent writers, retry")
            return _result(parts, project)

    def _part(self, run_id: str, project: str, cached: _Cached, cols: Columns, lo: int, now: float) -> _Part:
        """Classify and detect the rows from ``lo`` up to the first re-logged one of a pending
        rewind (or the end); rows that begin with it start the new attempt."""
        n = len(cols)
        tl = cached.timeline
        if tl.pending or tl.due:     # this part may change it: changed on a copy, kept once committed
            tl = tl.copy()
        cut = tl.relog_at(cols.step, cols.ts, lo, cached.last_step) if tl.pending else None
        resolved: list[dict[str, Any]] = []
        if cut == lo:            # the first re-logged record: a new attempt begins with it
            engine, resolved = _begin_attempt(run_id, cached.engine, tl)
            last: int | None = None
            hi = n
        else:
            engine, last = cached.engine, cached.last_step
            hi = n if cut is None else cut
        sub = cols if (lo, hi) == (0, n) else cols.take(range(lo, hi))
        start = tl.attempts[-1]["start"] if tl.attempts else None
        below = 0
        if start is not None and sub.step and min(sub.step) < start:
            keep = [i for i, s in enumerate(sub.step) if s >= start]
            below = len(sub) - len(keep)
            sub = sub.take(keep)
        split = split_batch(sub.step, last)
        changed, rec, health, kept = run_engine(engine, sub, split.in_order, tl)
        saw = bool(split.in_order) and (tl.went_on(sub.step[split.in_order[-1]])
                                        or tl.saw_ts(sub.ts[i] for i in split.in_order))
        alerts = _as_stored(resolved + [a.to_dict() for a in changed], project, now, tl.attempt)
        notifying = [d for d in alerts if notifies(d)]
        last_vals = last_values(sub, split.in_order[-1], engine) if split.in_order else None
        began = cut == lo
        active = _active(engine, project) if alerts or began else None
        commit = RunCommit(
            project=project, run_id=run_id, expected_version=cached.v, now=now, engine=engine,
            cols=sub, in_order=split.in_order, late=split.late, batch_duplicates=split.duplicates + below,
            alerts=alerts, advice=Advice(health, rec, last_vals, active),
            claims=[dedupe_key(d) for d in notifying], attempt=tl.attempt,
            timeline=tl.to_bytes() if (began or kept or saw) else None,
            attempts=tl.summary() if began else None)
        new_last = sub.step[split.in_order[-1]] if split.in_order else last
        return _Part(hi, commit, split, below, alerts, notifying, rec, health,
                     _Cached(cached.v, engine, new_last, tl))

    async def put_meta(self, run_id: str, meta: dict[str, Any], *, project: str = DEFAULT_PROJECT,
                       now: float | None = None) -> RunSummary:
        """:meth:`put_meta_changes` without its alert changes: the run after the change."""
        return (await self.put_meta_changes(run_id, meta, project=project, now=now))[0]

    async def put_meta_changes(self, run_id: str, meta: dict[str, Any], *, project: str = DEFAULT_PROJECT,
                               now: float | None = None) -> tuple[RunSummary, list[dict[str, Any]]]:
        """Create the run or replace its metadata; the detectors are configured by it
        (``Engine.set_meta``), under the same version check as a batch. A checkpoint it names
        for the first time is waited for (or its state kept now, if the records passed it); a new
        rewind waits for its first re-logged record (:mod:`.attempts`).

        The metadata the run already has (a retry, a client sending it again) changes nothing:
        once the stored version confirms it, it is answered without a commit. Otherwise the
        commit starts from this replica's engine of the run, as a batch does, and the version
        check catches a change made elsewhere.

        Returns the run and the alert changes the metadata made: the alerts of the detectors it
        took off or rebuilt (another ``objective``, another schedule), resolved, as a batch's
        answer gives its changes (stored with them, and with the summary's new advice)."""
        now = wall_now(now)
        key = (project, run_id)
        gone: list[dict[str, Any]] = []
        async with self._lock(key):
            cached = await self._start(key)
            for _ in range(self.MAX_TRIES):
                gone = []  # (a pass refused by a conflict committed none)
                if cached.v and same_meta(cached.engine.meta, meta):
                    snap = await self.store.load(project, run_id)
                    if snap.version != cached.v:      # changed elsewhere: compare with that
                        cached = _restore(run_id, snap)
                        continue
                    tl = cached.timeline.copy()
                    if not tl.new_checkpoints(meta) and not tl.new_rewinds(meta) and tl == cached.timeline:
                        self._keep(key, cached)
                        break
                tl = cached.timeline.copy()
                # the alerts of detectors the new metadata took off or rebuilt, resolved: stored
                # with the summary's new advice, or they would stay open in the listings
                gone = _as_stored([a.to_dict() for a in cached.engine.set_meta(dict(meta))], project, now,
                                  tl.attempt)
                for c in tl.new_checkpoints(meta):
                    if cached.last_step is None or c > cached.last_step:
                        tl.wait_for(c)
                    else:           # named after its records: the nearest state there is
                        tl.keep(c, cached.engine.to_bytes())
                for r in tl.new_rewinds(meta)[-1:]:     # several at once: the latest one counts
                    if tl.attempt >= MAX_ATTEMPTS:
                        log.warning("run %r of project %r has %d attempts, the most kept: its rewind to "
                                    "step %d begins none", run_id, project, tl.attempt, r["to_step"])
                        continue
                    tl.pending = {**r, "ts": await self._latest_ts(run_id, project, cached, tl)}
                changed = tl != cached.timeline
                out = await self.store.commit(RunCommit(
                    project=project, run_id=run_id, expected_version=cached.v, now=now,
                    engine=cached.engine, meta=dict(meta), attempt=tl.attempt,
                    timeline=tl.to_bytes() if changed else None, alerts=gone,
                    advice=_advice(cached.engine, project) if gone else None))
                if isinstance(out, Snapshot):
                    cached = self._conflict(key, run_id, out)
                    continue
                _stamp(gone, out.alerts)
                self._keep(key, _Cached(out.version, cached.engine, cached.last_step, tl))
                break
            else:
                raise StoreUnavailable(f"run {run_id!r} of project {project!r}: too many concurrent writers, retry")
        s = await self.store.get_run(run_id, project=project)
        assert s is not None
        return s, gone

    async def _latest_ts(self, run_id: str, project: str, cached: _Cached, tl: Timeline) -> float | None:
        """The ``ts`` of the current attempt's highest stored step (what a re-logged record is
        later than)."""
        if cached.last_step is None:
            return None
        cols = await self.store.read_series(run_id, cached.last_step, cached.last_step, project=project,
                                            attempt=tl.attempt)
        return cols.ts[-1] if cols is not None and cols.ts else None

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


def _begin_attempt(run_id: str, engine: Engine, tl: Timeline) -> tuple[Engine, list[dict[str, Any]]]:
    """Begin ``tl``'s pending rewind: the detectors as they were at the latest checkpoint at or
    before its ``to_step``, with the run's current metadata. Without a state kept there (no
    checkpoint named, or none before ``to_step``) they start over, as on a new run: a state from
    after ``to_step`` holds the statistics of the steps the rewind discarded, and the detectors'
    running statistics cannot be moved back in steps. The alerts active now that are not active
    in the restored state come back resolved at ``to_step`` (the records that raised them were
    undone), as the in-process detectors do."""
    p = tl.pending
    assert p is not None
    state = tl.begin(p["to_step"], p["at_step"], engine.meta)
    new = Engine.from_bytes(state) if state else Engine(run_id=run_id, meta=engine.meta)
    new.set_meta(dict(engine.meta))
    still = {a.id for a in new.active_alerts}
    resolved = []
    for a in engine.active_alerts:
        if a.id not in still:
            d = a.to_dict()
            d.update(resolved_step=p["to_step"], event="resolved")
            resolved.append(d)
    return new, resolved


def _as_stored(alerts: list[dict[str, Any]], project: str, now: float, attempt: int) -> list[dict[str, Any]]:
    """Alert changes (``Alert.to_dict()``) as the store keeps them: with their project, the time of
    the change and, after a rollback, their attempt (a relapse may raise an alert of an earlier
    attempt's id: told apart)."""
    extra: dict[str, Any] = {"project": project, "updated_at": now}
    if attempt > 1:
        extra["attempt"] = attempt
    return [{**d, **extra} for d in alerts]


def _stamp(alerts: list[dict[str, Any]], stored: list[tuple[float, float | None, bool]]) -> list[str]:
    """Give committed alert changes what the store knows of them (when each was raised, whether
    it was acknowledged); return the ids the commit stored for the first time."""
    new_ids = []
    for d, (raised_at, acked_at, first) in zip(alerts, stored):
        d["raised_at"] = raised_at
        if first:
            new_ids.append(d["id"])
        if acked_at is not None:
            d["acknowledged"] = True
            d["acknowledged_at"] = acked_at
    return new_ids


def _active(engine: Engine, project: str) -> list[dict[str, Any]]:
    """The run's active alerts, as its summary keeps them."""
    return [{**a.to_dict(), "project": project} for a in engine.active_alerts]


def _advice(engine: Engine, project: str) -> Advice:
    """The run's summary as the engine says now, its latest values unchanged (no record came)."""
    rec = engine.recommendation
    return Advice(engine.health, rec.to_dict() if rec is not None else None, None, _active(engine, project))


def _restore(run_id: str, snap: Snapshot) -> _Cached:
    engine = Engine.from_bytes(snap.engine_state) if snap.engine_state else Engine(run_id=run_id, meta=None)
    return _Cached(snap.version, engine, snap.last_step, Timeline.from_bytes(snap.timeline))


def _result(parts: list[tuple[_Part, Committed]], project: str) -> IngestResult:
    """One answer for the parts of a batch: counts added up, alerts in order, the last part's
    verdict."""
    accepted = duplicates = out_of_order = 0
    alerts: list[dict[str, Any]] = []
    new_ids: list[str] = []
    notify: list[dict[str, Any]] = []
    for part, out in parts:
        new_ids += _stamp(part.alerts, out.alerts)
        split = part.split
        accepted += len(split.in_order) + out.stored_late
        duplicates += split.duplicates + part.below + out.duplicate_late
        out_of_order += out.stored_late
        alerts += part.alerts
        notify += [d for d, won in zip(part.notifying, out.claimed) if won]
    last = parts[-1][0]
    return IngestResult(
        accepted=accepted, duplicates=duplicates, out_of_order=out_of_order, alerts=alerts,
        new_alert_ids=new_ids, recommendation=last.rec, health=last.health, project=project, notify=notify)
