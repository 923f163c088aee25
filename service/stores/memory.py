"""The embedded in-process store (``memory://``): the default, so ``losswatch serve`` needs nothing
else. One process only: it cannot be shared by several workers or replicas (use Redis for that).

Per run it keeps the newest steps column-wise in step order (appending is the common case; an
out-of-order step is inserted by bisection), older steps downsampled into buckets by the same
rules and code as the Redis store (:mod:`.series`: the newest ``raw_chunks`` chunks of 960 steps
stay raw, then levels of 64 / 2,048 / 131,072 steps a bucket), so memory per run is bounded and
both stores answer the same series. A run expires ``retention_seconds`` after its last write,
as on Redis. It also keeps the alerts by id, the action reports, the notification claims and
the detector state: the object the pipeline committed, serialised (``to_bytes``) only when a
snapshot is loaded, and the run's timeline (bytes). Each attempt of a run has its own series
(:class:`_Series`, attempt 1 first), since the pipeline keeps the engine it committed and loads only a run it
does not hold (the Redis store ships the bytes with every commit; here that would only cost
time). Runs are keyed by (project, run_id). :meth:`MemoryStore.load` and
:meth:`MemoryStore.commit` never await, so each is atomic in the event loop (the contract in
:mod:`.base`): a commit checks the version and applies the whole change, or nothing.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..lr.policy_store import MemoryPolicies
from ..settings import Settings
from . import series as ser
from .base import (
    DEFAULT_PROJECT,
    Columns,
    Committed,
    RunCommit,
    RunSummary,
    Snapshot,
    Store,
    alert_matches,
    sorted_contains,
    summary_matches,
    wall_now,
)

_COLUMNS = ("step", "loss", "grad_norm", "lr", "val_loss", "ts", "extra")


@dataclass
class _Series:
    """The steps of one attempt of a run."""

    raw: Columns = field(default_factory=Columns)   # steps >= c0 * CHUNK, in step order
    c0: int = 0                                     # watermarks: see series.py
    w1: int = 0
    w2: int = 0
    tiers: tuple[dict[int, bytes], ...] = field(default_factory=lambda: ({}, {}, {}))  # levels 1-3
    last_step: int | None = None                    # the highest step stored


@dataclass
class _Run:
    summary: RunSummary
    series: dict[int, _Series] = field(default_factory=lambda: {1: _Series()})   # attempt -> its steps
    written_at: float = 0.0
    version: int = 0
    engine: Any = None                              # the committed detector state (has to_bytes)
    timeline: bytes | None = None                   # the pipeline's bytes about attempts
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    claims: set[str] = field(default_factory=set)   # notification keys won (they expire with the run)


_RunKey = tuple[str, str]   # (project, run_id)


class MemoryStore(Store):
    """In-process store; see the module docstring."""

    url = "memory://"

    def __init__(self, *, retention_seconds: int = Settings.retention_seconds,
                 raw_chunks: int = Settings.raw_chunks, levels: tuple[ser.Level, ...] | None = None) -> None:
        self.retention = retention_seconds
        self.raw_chunks = max(1, raw_chunks)
        self.levels = tuple(levels or ser.LEVELS)
        ser.check_levels(self.levels)
        # runs by last write, oldest first: expiry pops from the front
        self._runs: OrderedDict[_RunKey, _Run] = OrderedDict()
        self._alert_run: dict[tuple[str, str], _RunKey] = {}   # (project, alert id) -> run
        self.policies = MemoryPolicies()

    # --- internals --------------------------------------------------------------------------
    def _get_or_create(self, key: _RunKey, now: float) -> _Run:
        run = self._runs.get(key)
        if run is None:
            project, run_id = key
            run = _Run(summary=RunSummary(run_id=run_id, project=project, created_at=now), written_at=now)
            self._runs[key] = run
        return run

    def _expire(self, now: float) -> None:
        """Drop the runs whose last write is older than the retention (0 = keep forever)."""
        if self.retention <= 0:
            return
        while self._runs:
            key, run = next(iter(self._runs.items()))
            if run.written_at + self.retention > now:
                return
            del self._runs[key]
            for alert_id in run.alerts:
                self._alert_run.pop((key[0], alert_id), None)

    def _touch(self, key: _RunKey, run: _Run, now: float) -> None:
        run.written_at = now
        self._runs.move_to_end(key)

    def _has_step(self, att: _Series, step: int) -> bool:
        if step >= att.c0 * ser.CHUNK:
            return sorted_contains(att.raw.step, step)
        k = ser.late_level(self.levels, att.w1, att.w2, step)
        width = self.levels[k].width
        blob = att.tiers[k].get(step // width)
        return blob is not None and ser.Agg.unpack(blob, width).has(step % width)

    def _fold_late(self, att: _Series, cols: Columns, idx: list[int]) -> None:
        """New steps below the raw window go into their downsampled buckets."""
        touched: dict[tuple[int, int], ser.Agg] = {}
        for i in idx:
            s = cols.step[i]
            k = ser.late_level(self.levels, att.w1, att.w2, s)
            width = self.levels[k].width
            agg = touched.get((k, s // width))
            if agg is None:
                blob = att.tiers[k].get(s // width)
                agg = touched[(k, s // width)] = ser.Agg.unpack(blob, width) if blob else ser.Agg(width=width)
            agg.add(s % width, [getattr(cols, f)[i] for f in ser.VALUE_FIELDS], cols.ts[i])
        for (k, b), agg in touched.items():
            att.tiers[k][b] = agg.pack()

    def _compact(self, att: _Series) -> None:
        """Fold the steps that fell out of the raw window into level-1 buckets and move buckets
        down the levels: the Redis store's rules (:mod:`.series`), on the stored steps only."""
        target = ser.raw_start(att.last_step, self.raw_chunks)
        if target <= att.c0:
            return
        raw = att.raw
        cut = bisect.bisect_left(raw.step, target * ser.CHUNK)
        d1, d2, d3 = att.tiers
        if cut:
            d1.update(ser.aggregate_rows(raw, range(cut), self.levels[0].width))
            for n in _COLUMNS:
                del getattr(raw, n)[:cut]
        plan = ser.plan_cascade(self.levels, target, att.w1, att.w2, d1.keys(), d2.keys())
        set2, set3 = ser.apply_cascade(self.levels, plan, d1, d2, d3)
        for subs in plan.into_d2.values():
            for b in subs:
                d1.pop(b, None)
        for subs in plan.into_d3.values():
            for b in subs:
                d2.pop(b, None)
        d2.update(set2)
        d3.update(set3)
        att.c0, att.w1, att.w2 = target, plan.w1, plan.w2

    @staticmethod
    def _store_rows(series: Columns, cols: Columns, new: list[int], all_in_order: bool) -> None:
        """Append rows in step order; insert the (rare) lower ones by bisection."""
        steps = series.step
        dst = [getattr(series, n) for n in _COLUMNS]
        src = [getattr(cols, n) for n in _COLUMNS]
        if all_in_order:
            for d, c in zip(dst, src):   # the usual batch: strictly increasing, after the stored ones
                d.extend(c)
            return
        for i in new:
            s = cols.step[i]
            if not steps or s > steps[-1]:
                for d, c in zip(dst, src):
                    d.append(c[i])
            else:
                pos = bisect.bisect_left(steps, s)
                for d, c in zip(dst, src):
                    d.insert(pos, c[i])

    # --- writes -----------------------------------------------------------------------------
    async def load(self, project: str, run_id: str) -> Snapshot:
        self._expire(time.time())
        return self._snapshot(self._runs.get((project, run_id)))

    @staticmethod
    def _snapshot(run: _Run | None) -> Snapshot:
        if run is None:
            return Snapshot(version=0, engine_state=None, last_step=None)
        return Snapshot(version=run.version, engine_state=run.engine.to_bytes() if run.engine is not None else None,
                        last_step=run.summary.last_step, timeline=run.timeline)

    async def commit(self, change: RunCommit) -> Committed | Snapshot:
        c = change
        now = c.now
        self._expire(now)
        key = (c.project, c.run_id)
        run = self._runs.get(key)
        if (run.version if run is not None else 0) != c.expected_version:
            return self._snapshot(run)
        run = self._get_or_create(key, now)
        run.version += 1
        run.engine = c.engine
        if c.timeline is not None:
            run.timeline = c.timeline
        s = run.summary
        if c.attempts is not None:
            s.attempts = [dict(a) for a in c.attempts]
        att = run.series.get(c.attempt)
        if att is None:
            att = run.series[c.attempt] = _Series()
            s.last_step = None                           # the run's last step: the current attempt's
        stored_late, dup_late = self._store_steps(att, c)
        accepted = len(c.in_order) + stored_late
        alert_info = [self._store_alert(run, key, d, now) for d in c.alerts]
        claimed = [k not in run.claims for k in c.claims]
        run.claims.update(c.claims)
        if c.in_order:
            s.last_step = att.last_step = c.cols.step[c.in_order[-1]]    # in-order steps increase
            if ser.raw_start(att.last_step, self.raw_chunks) > att.c0:
                self._compact(att)
        if accepted:
            s.last_seen = now
        s.n_steps += accepted
        s.duplicates += c.batch_duplicates + dup_late
        s.out_of_order += stored_late
        if c.advice is not None:
            s.health = c.advice.health
            s.recommendation = c.advice.recommendation
            if c.advice.last is not None:
                s.last = c.advice.last
            if c.advice.active_alerts is not None:   # the stored alerts: with their times and acks
                s.active_alerts = [run.alerts.get(a["id"], a) for a in c.advice.active_alerts]
        if c.meta is not None:
            s.meta = dict(c.meta)
        self._touch(key, run, now)
        return Committed(version=run.version, stored_late=stored_late, duplicate_late=dup_late,
                         alerts=alert_info, claimed=claimed)

    def _store_steps(self, att: _Series, c: RunCommit) -> tuple[int, int]:
        """Store the in-order steps and the late ones not stored yet; (late stored, late duplicates)."""
        cols = c.cols
        late = [i for i in c.late if not self._has_step(att, cols.step[i])]
        if not late:
            if c.in_order:
                self._store_rows(att.raw, cols, c.in_order, len(c.in_order) == len(cols))
            return 0, len(c.late)
        floor = att.c0 * ser.CHUNK
        below = [i for i in late if cols.step[i] < floor]
        if below:
            self._fold_late(att, cols, below)
        new = sorted([*c.in_order, *(i for i in late if cols.step[i] >= floor)])
        self._store_rows(att.raw, cols, new, False)
        return len(late), len(c.late) - len(late)

    def _store_alert(self, run: _Run, key: _RunKey, alert: dict[str, Any],
                     now: float) -> tuple[float, float | None, bool]:
        """Keep an alert's new state with the time it was first raised and its acknowledgement."""
        prev = run.alerts.get(alert["id"])
        d = dict(alert)
        d["raised_at"] = prev["raised_at"] if prev else now
        if prev and prev.get("acknowledged"):
            d["acknowledged"] = True
            d["acknowledged_at"] = prev.get("acknowledged_at")
        if prev is None:
            self._alert_run[(key[0], alert["id"])] = key
        run.alerts[alert["id"]] = d
        return d["raised_at"], d.get("acknowledged_at"), prev is None

    async def ack_alert(self, alert_id: str, *, project: str = DEFAULT_PROJECT,
                        now: float | None = None) -> dict[str, Any] | None:
        key = self._alert_run.get((project, alert_id))
        if key is None:
            return None
        run = self._runs[key]
        a = run.alerts[alert_id]
        if not a.get("acknowledged"):
            a["acknowledged"] = True
            a["acknowledged_at"] = wall_now(now)
        return a

    async def record_action(self, run_id: str, report: dict[str, Any], *,
                            project: str = DEFAULT_PROJECT) -> dict[str, Any]:
        run = self._runs.get((project, run_id))
        if run is None:
            raise KeyError(run_id)
        run.actions.append(report)
        return report

    # --- reads ------------------------------------------------------------------------------
    async def get_run(self, run_id: str, *, project: str = DEFAULT_PROJECT) -> RunSummary | None:
        self._expire(time.time())
        run = self._runs.get((project, run_id))
        return run.summary if run else None

    async def list_runs(self, *, projects: Iterable[str] | None = None, health: str | None = None,
                        active_since: float | None = None) -> list[RunSummary]:
        self._expire(time.time())
        pset = set(projects) if projects is not None else None
        return [s for s in (self._runs[k].summary for k in sorted(self._runs, key=lambda k: (k[1], k[0])))
                if summary_matches(s, pset, health, active_since)]

    async def read_attempt(self, run_id: str, start: int | None = None, end: int | None = None, *,
                           project: str = DEFAULT_PROJECT, attempt: int = 1) -> Columns | None:
        self._expire(time.time())
        run = self._runs.get((project, run_id))
        if run is None:
            return None
        att = run.series.get(attempt)
        if att is None:
            return Columns()
        raw = att.raw
        lo = 0 if start is None else bisect.bisect_left(raw.step, start)
        hi = len(raw.step) if end is None else bisect.bisect_right(raw.step, end)
        tail = Columns(*(getattr(raw, n)[lo:hi] for n in _COLUMNS))
        last = att.last_step
        if att.c0 == 0 or last is None:       # nothing downsampled yet
            return tail
        first = 0 if start is None else start
        upto = last if end is None else min(end, last)
        out = Columns()
        for k, s0, s1 in ser.level_spans(self.levels, att.c0, att.w1, att.w2):
            if s1 > s0 and first < s1 and upto >= s0:
                for row in ser.bucket_rows(att.tiers[k], self.levels[k].width, first, upto):
                    for n in _COLUMNS:
                        getattr(out, n).append(row[n])
        for n in _COLUMNS:
            getattr(out, n).extend(getattr(tail, n))
        return out

    async def list_alerts(self, *, run_id: str | None = None, project: str = DEFAULT_PROJECT,
                          projects: Iterable[str] | None = None, kind: str | None = None,
                          severity: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        self._expire(time.time())
        pset = set(projects) if projects is not None else None
        if run_id is not None:
            one = self._runs.get((project, run_id))
            runs = [one] if one is not None else []
        else:
            runs = list(self._runs.values())
        out = []
        for run in runs:
            if pset is not None and run.summary.project not in pset:
                continue
            out.extend(a for a in run.alerts.values() if alert_matches(a, kind, severity, since))
        out.sort(key=lambda a: a["updated_at"], reverse=True)
        return out

    async def get_alert(self, alert_id: str, *, project: str = DEFAULT_PROJECT) -> dict[str, Any] | None:
        key = self._alert_run.get((project, alert_id))
        return None if key is None else self._runs[key].alerts.get(alert_id)

    async def list_actions(self, run_id: str, *, project: str = DEFAULT_PROJECT) -> list[dict[str, Any]]:
        run = self._runs.get((project, run_id))
        return list(run.actions) if run else []

    async def ping(self) -> None:
        return None
