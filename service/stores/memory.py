"""The embedded in-process store (``memory://``): the default, so ``losswatch serve`` needs nothing
else. One process only: it cannot be shared by several workers or replicas (use Redis for that).

Per run it keeps the series column-wise in step order (appending is the common case; an
out-of-order step is inserted by bisection), the live ``Engine`` object (the interface's
``to_bytes`` round trip is what the Redis store does; here it would only cost time), the alerts
by id and the action reports. One ``asyncio.Lock`` per run serialises ingests for that run (the
atomicity contract in :mod:`.base`); nothing awaits while the lock is held, so the lock is cheap
and a batch is applied all or nothing.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field
from typing import Any, Iterable

from .base import (
    Columns,
    alert_matches,
    IngestResult,
    ProjectConflict,
    RunSummary,
    Store,
    alert_record,
    classify_steps,
    last_values,
    new_engine,
    run_engine,
    sorted_contains,
    summary_matches,
    wall_now,
)


@dataclass
class _Run:
    summary: RunSummary
    series: Columns = field(default_factory=Columns)
    engine: Any = None
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    project_named: bool = False   # False while the project is the implicit "default"


class MemoryStore(Store):
    """In-process store; see the module docstring."""

    url = "memory://"

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._alert_run: dict[str, str] = {}   # alert id -> run id

    # --- internals --------------------------------------------------------------------------
    def _get_or_create(self, run_id: str, project: str | None, now: float) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            run = _Run(summary=RunSummary(run_id=run_id, project=project or "default", created_at=now),
                       project_named=project is not None)
            run.engine = new_engine(run_id, None)
            self._runs[run_id] = run
        elif project is not None and project != run.summary.project:
            if run.project_named:
                raise ProjectConflict(run_id, run.summary.project, project)
            # a run created without naming a project may be claimed once by the first that does
            run.summary.project = project
            run.project_named = True
        elif project is not None:
            run.project_named = True
        return run

    @staticmethod
    def _store_rows(series: Columns, cols: Columns, new: list[int], all_in_order: bool) -> None:
        """Append rows in step order; insert the (rare) lower ones by bisection."""
        steps = series.step
        names = ("step", "loss", "grad_norm", "lr", "val_loss", "ts", "extra")
        dst = [getattr(series, n) for n in names]
        src = [getattr(cols, n) for n in names]
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
    async def ingest(self, run_id: str, cols: Columns, *, project: str | None = None,
                     now: float | None = None) -> IngestResult:
        now = wall_now(now)
        run = self._get_or_create(run_id, project, now)
        async with run.lock:
            s = run.summary
            series = run.series
            split = classify_steps(cols.step, lambda k: sorted_contains(series.step, k), s.last_step)
            # detectors first: if they raise, nothing of the batch is stored (all or nothing)
            changed, rec, health = run_engine(run.engine, cols, split.in_order)
            self._store_rows(series, cols, split.new, len(split.in_order) == len(cols))
            new_ids: list[str] = []
            out_alerts: list[dict[str, Any]] = []
            for a in changed:
                prev = run.alerts.get(a.id)
                if prev is None:
                    new_ids.append(a.id)
                    self._alert_run[a.id] = run_id
                d = alert_record(a, prev, now)
                run.alerts[a.id] = d
                out_alerts.append(d)
            if split.in_order:
                s.last = last_values(cols, split.in_order[-1], run.engine)
            if split.new:
                s.last_step = series.step[-1]
                s.last_seen = now
            s.n_steps = len(series.step)
            s.duplicates += split.duplicates
            s.out_of_order += split.out_of_order
            s.health = health
            s.recommendation = rec
            if changed:
                s.active_alerts = [a for a in run.alerts.values() if a["resolved_step"] is None]
            return IngestResult(
                accepted=len(split.new), duplicates=split.duplicates, out_of_order=split.out_of_order,
                alerts=out_alerts, new_alert_ids=new_ids, recommendation=rec, health=health,
                project=s.project,
            )

    async def put_meta(self, run_id: str, meta: dict[str, Any], *, project: str | None = None,
                       now: float | None = None) -> RunSummary:
        now = wall_now(now)
        run = self._get_or_create(run_id, project, now)
        async with run.lock:
            run.summary.meta = dict(meta)
            run.engine.set_meta(dict(meta))
            return run.summary

    async def ack_alert(self, alert_id: str, *, now: float | None = None) -> dict[str, Any] | None:
        run_id = self._alert_run.get(alert_id)
        if run_id is None:
            return None
        run = self._runs[run_id]
        a = run.alerts[alert_id]
        if not a.get("acknowledged"):
            a["acknowledged"] = True
            a["acknowledged_at"] = wall_now(now)
        return a

    async def record_action(self, run_id: str, report: dict[str, Any]) -> dict[str, Any]:
        run = self._runs.get(run_id)
        if run is None:
            raise KeyError(run_id)
        run.actions.append(report)
        return report

    async def claim_notification(self, key: str, ttl: int) -> bool:
        # one process holds the store: nobody else can have sent it
        return True

    # --- reads ------------------------------------------------------------------------------
    async def get_run(self, run_id: str) -> RunSummary | None:
        run = self._runs.get(run_id)
        return run.summary if run else None

    async def list_runs(self, *, projects: Iterable[str] | None = None, health: str | None = None,
                        active_since: float | None = None) -> list[RunSummary]:
        pset = set(projects) if projects is not None else None
        return [s for s in (self._runs[rid].summary for rid in sorted(self._runs))
                if summary_matches(s, pset, health, active_since)]

    async def read_series(self, run_id: str, start: int | None = None,
                          end: int | None = None) -> Columns | None:
        run = self._runs.get(run_id)
        if run is None:
            return None
        ser = run.series
        lo = 0 if start is None else bisect.bisect_left(ser.step, start)
        hi = len(ser.step) if end is None else bisect.bisect_right(ser.step, end)
        return Columns(step=ser.step[lo:hi], loss=ser.loss[lo:hi], grad_norm=ser.grad_norm[lo:hi],
                       lr=ser.lr[lo:hi], val_loss=ser.val_loss[lo:hi], ts=ser.ts[lo:hi],
                       extra=ser.extra[lo:hi])

    async def list_alerts(self, *, run_id: str | None = None, projects: Iterable[str] | None = None,
                          kind: str | None = None, severity: str | None = None,
                          since: float | None = None) -> list[dict[str, Any]]:
        pset = set(projects) if projects is not None else None
        runs = [self._runs[run_id]] if run_id is not None and run_id in self._runs else (
            [] if run_id is not None else list(self._runs.values()))
        out = []
        for run in runs:
            if pset is not None and run.summary.project not in pset:
                continue
            out.extend(a for a in run.alerts.values() if alert_matches(a, kind, severity, since))
        out.sort(key=lambda a: a["updated_at"], reverse=True)
        return out

    async def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        run_id = self._alert_run.get(alert_id)
        return None if run_id is None else self._runs[run_id].alerts.get(alert_id)

    async def list_actions(self, run_id: str) -> list[dict[str, Any]]:
        run = self._runs.get(run_id)
        return list(run.actions) if run else []

    async def ping(self) -> None:
        return None
