"""Prometheus metrics (names fixed in notes/contracts.md).

Service-wide counters and the latency histogram live in one registry per app (each replica counts
what it handled; Prometheus sums replicas). Per-run gauges (:class:`RunSeries`, a Collector on the
same registry) are NOT kept in process memory: every scrape reads the runs active in the last
LOSSWATCH_METRICS_TTL seconds from the store, so whichever replica Prometheus scrapes, the per-run
figures are the same, and a quiet run stops being exported (bounded cardinality). NaN values are exported as NaN.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from losswatch.detectors.types import HEALTH_STATES, SEVERITY_RANK

from .stores.base import RunSummary

# the *_created series double the counters' cardinality and no dashboard uses them
disable_created_metrics()

HEALTH_VALUE = {h: i for i, h in enumerate(HEALTH_STATES)}   # ok 0, warning 1, critical 2

# per-run gauge name -> key in RunSummary.last ("step" comes from last_step)
RUN_GAUGES = (
    ("losswatch_run_loss", "loss", "Latest loss of the run (NaN when the loss was NaN)."),
    ("losswatch_run_grad_norm", "grad_norm", "Latest gradient norm of the run."),
    ("losswatch_run_lr", "lr", "Latest learning rate of the run."),
    ("losswatch_run_spike_rate", "spike_rate",
     "Share of the run's last 128 records that were loss spikes (one spike is a note; compare "
     "with the run's own past)."),
)


class ServiceMetrics:
    """The counters one service process keeps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.alerts_total = Counter("losswatch_alerts_total", "Alert episodes raised.",
                                    ["kind", "severity"], registry=r)
        self.actions_applied_total = Counter("losswatch_actions_applied_total",
                                             "Actions a client reported as applied.", ["type"], registry=r)
        self.ingest_records_total = Counter("losswatch_ingest_records_total",
                                            "Step records received, by result.", ["result"], registry=r)
        self.ingest_requests_total = Counter("losswatch_ingest_requests_total",
                                             "POST /steps requests, by HTTP status code.", ["code"], registry=r)
        self.ingest_latency = Histogram(
            "losswatch_ingest_latency_seconds", "Time to handle one POST /steps.", registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
        # label children cached: .labels() costs a lock and a dict look-up per call
        self.accepted = self.ingest_records_total.labels("accepted")
        self.duplicate = self.ingest_records_total.labels("duplicate")
        self.rejected = self.ingest_records_total.labels("rejected")
        self._codes: dict[int, object] = {}
        self.notifications_total = Counter(
            "losswatch_notifications_total", "Webhook notifications by result: sent; failed (an attempt; "
            "retried with backoff); gave_up (no more attempts); rate_limited and queue_full (held back, "
            "never sent).", ["result"], registry=r)
        # registered last: the per-run series follow the counters in the exposition
        self.run_series = RunSeries()
        r.register(self.run_series)

    def request(self, code: int) -> None:
        c = self._codes.get(code)
        if c is None:
            c = self._codes[code] = self.ingest_requests_total.labels(str(code))
        c.inc()

    def notification(self, result: str) -> None:
        self.notifications_total.labels(result).inc()

    def render(self, runs: Iterable[RunSummary], store_up: bool) -> bytes:
        """The whole exposition: this process's counters, then the per-run gauges of ``runs``
        (what this scrape read from the store; ``store_up``: whether the store answered)."""
        token = self.run_series.scrape.set((list(runs), store_up))
        try:
            return generate_latest(self.registry)
        finally:
            self.run_series.scrape.reset(token)


class RunSeries:
    """A Collector of the per-run gauges, ``losswatch_runs_exported`` and ``losswatch_store_up``.

    They come from the store, read asynchronously by the /metrics route before the (synchronous)
    collection: the route hands them over in ``scrape``, a context variable, so concurrent scrapes
    (each of its token's projects) never see each other's runs, and a collection outside a
    scrape yields none of these series."""

    def __init__(self) -> None:
        self.scrape: ContextVar[tuple[list[RunSummary], bool] | None] = ContextVar("losswatch_scrape", default=None)

    def describe(self) -> Iterator[Metric]:
        """The families without samples: their names, so the registry refuses a clash."""
        return _run_families([], True)

    def collect(self) -> Iterator[Metric]:
        scrape = self.scrape.get()
        if scrape is None:
            return iter(())
        return _run_families(*scrape)


def _run_families(runs: list[RunSummary], store_up: bool) -> Iterator[Metric]:
    fams = [GaugeMetricFamily(name, help_, labels=["run", "project"]) for name, _, help_ in RUN_GAUGES]
    step = GaugeMetricFamily("losswatch_run_step", "Highest step stored for the run.", labels=["run", "project"])
    health = GaugeMetricFamily("losswatch_run_health", "Run health: 0 ok, 1 warning, 2 critical.",
                               labels=["run", "project"])
    seen = GaugeMetricFamily("losswatch_run_last_seen_timestamp_seconds",
                             "Wall-clock time of the run's last accepted batch.", labels=["run", "project"])
    active = GaugeMetricFamily("losswatch_run_active_alerts", "1 per active alert kind of the run.",
                               labels=["run", "project", "kind", "severity"])
    # only finished runs get a series (no extra one per running run)
    finished = GaugeMetricFamily("losswatch_run_finished",
                                 "1 for a run whose metadata says status 'finished' (its client closed "
                                 "cleanly): silence is expected, not a hung job.", labels=["run", "project"])
    for s in runs:
        lab = [s.run_id, s.project]
        for fam, (_, key, _) in zip(fams, RUN_GAUGES):
            v = s.last.get(key)
            if v is not None:
                fam.add_metric(lab, v)
        if s.last_step is not None:
            step.add_metric(lab, float(s.last_step))
        health.add_metric(lab, float(HEALTH_VALUE.get(s.health, 0)))
        if s.last_seen is not None:
            seen.add_metric(lab, s.last_seen)
        if s.meta.get("status") == "finished":
            finished.add_metric(lab, 1.0)
        worst: dict[str, str] = {}
        for a in s.active_alerts:
            k, sev = a["kind"], a["severity"]
            if k not in worst or SEVERITY_RANK.get(sev, 0) > SEVERITY_RANK.get(worst[k], 0):
                worst[k] = sev
        for k, sev in sorted(worst.items()):
            active.add_metric(lab + [k, sev], 1.0)
    exported = GaugeMetricFamily("losswatch_runs_exported", "Runs exported (active within the TTL).",
                                 value=len(runs))
    up = GaugeMetricFamily("losswatch_store_up", "1 if the store answered this scrape.",
                           value=1.0 if store_up else 0.0)
    return iter([*fams, step, health, seen, finished, active, exported, up])
