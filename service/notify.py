"""Webhook notifications: every alert that asks something new of the user (an alert event
``raised`` or ``escalated`` of severity warning or worse) is POSTed as JSON to each receiver
named by ``--notify`` / LOSSWATCH_NOTIFY, in the background: ingest only puts it on a queue.

A receiver is ``URL`` or ``URL#project=NAME`` (only that project's alerts; a URL fragment is
never sent to the server, so it is free for this). The body is Slack-compatible (``text``) and
carries the alert itself (``alert``, with its ``id``), the ``event`` and a ``dedupe_key``.

Delivery (docs/notifications.md): each receiver has its own bounded queue and worker, so a slow
or unreachable receiver delays only itself; a failed attempt (connection error, timeout, 429 or
5xx) is retried with exponential backoff; delivery is at least once (a receiver dedupes by
``dedupe_key``: alert id, event and last step). A per-run rate limit holds back floods; with
replicas on one store, the replica whose commit stored the alert change and claimed its
notification (the ingest pipeline, in the same atomic commit) sends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlsplit

from losswatch.client.version import __version__
from losswatch.detectors.events import ESCALATED, RAISED
from losswatch.detectors.types import SEVERITY_RANK
from losswatch.detectors.wire import encode_floats

log = logging.getLogger("losswatch.notify")

#: The events that ask something new of the user (``updated`` and ``resolved`` do not).
NOTIFY_EVENTS = (RAISED, ESCALATED)
MIN_SEVERITY = "warning"

QUEUE_SIZE = 1000            # notifications waiting per receiver; beyond: dropped and counted
TIMEOUT_S = 10.0             # one delivery attempt
ATTEMPTS = 10                # then given up: about 3 minutes of retries (more if attempts time out)
BACKOFF_S = 0.5              # first retry delay, doubled each attempt (with jitter) ...
BACKOFF_MAX_S = 60.0         # ... up to this
DRAIN_S = 2.0                # at shutdown, time left to the queues to empty before they are dropped


class ReceiverError(ValueError):
    """A receiver spec that cannot be used; the message says why."""


@dataclass(frozen=True)
class Receiver:
    url: str                       # what is POSTed to (without the options fragment)
    project: str | None = None     # only this project's alerts; None = every project

    @property
    def where(self) -> str:
        """The URL without its path and query, for logs (a webhook's path is often its secret)."""
        p = urlsplit(self.url)
        port = f":{p.port}" if p.port else ""
        return f"{p.scheme}://{p.hostname}{port}/..."

    @property
    def tag(self) -> str:
        """A short stable name of the receiver (for task names and logs: the URL may hold a secret)."""
        return hashlib.sha1(f"{self.url}#{self.project or ''}".encode()).hexdigest()[:12]


def parse_receivers(spec: str, name: str = "LOSSWATCH_NOTIFY") -> tuple[Receiver, ...]:
    """Receivers from ``spec``: entries separated by whitespace or commas (a comma inside a URL is
    written ``%2C``), each ``URL`` or ``URL#project=NAME``.

    >>> parse_receivers("http://a/x, https://b/y#project=p1")
    (Receiver(url='http://a/x', project=None), Receiver(url='https://b/y', project='p1'))
    """
    from .ingest import LABEL_RULE, valid_label

    out = []
    for entry in spec.replace(",", " ").split():
        url, _, options = entry.partition("#")
        p = urlsplit(url)
        if p.scheme not in ("http", "https") or not p.netloc:
            raise ReceiverError(f"{name}: {url!r} is not an http:// or https:// URL")
        project = None
        for opt in filter(None, options.split("&")):
            key, eq, value = opt.partition("=")
            if key != "project" or not eq:
                raise ReceiverError(f"{name}: option {opt!r} of {p.scheme}://{p.netloc}/... is not project=NAME")
            if not valid_label(value):
                raise ReceiverError(f"{name}: project {value!r} must be {LABEL_RULE}")
            project = value
        out.append(Receiver(url, project))
    return tuple(out)


def notifies(alert: dict[str, Any]) -> bool:
    """Whether an alert snapshot (``Alert.to_dict()``) is sent to receivers."""
    return (alert.get("event") in NOTIFY_EVENTS
            and SEVERITY_RANK.get(alert.get("severity", ""), 0) >= SEVERITY_RANK[MIN_SEVERITY])


def dedupe_key(alert: dict[str, Any]) -> str:
    """What a receiver dedupes on: the same alert, event and step (in the same attempt of the
    run, after a rollback) is the same notification."""
    key = f"{alert['id']}:{alert['event']}:{alert['last_step']}"
    attempt = alert.get("attempt", 1)
    return key if attempt == 1 else f"{key}:attempt{attempt}"


def run_link(public_url: str, project: str, run_id: str) -> str:
    """The run's page (a run is named by its project and its run id)."""
    return f"{public_url.rstrip('/')}/runs/{quote(run_id, safe='')}?project={quote(project, safe='')}"


def slack_escape(text: str) -> str:
    """Slack reads ``<...>`` as a link or mention and ``&`` as an entity: written out as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(alert: dict[str, Any], project: str, public_url: str, held_back: int = 0) -> dict[str, Any]:
    """The JSON body for one alert event: Slack's ``text`` plus the alert for programs."""
    run_id = alert["run_id"]
    link = run_link(public_url, project, run_id)
    advice = (alert.get("action") or {}).get("reason") or ""
    lines = [f"*[{alert['severity']}] {alert['kind']}* {alert['event']} in run `{run_id}` "
             f"(project `{project}`) at step {alert['last_step']}",
             slack_escape(alert["message"])]
    if advice:
        lines.append(f"Advice: {slack_escape(advice)}")
    lines.append(f"<{link}|Open the run>")
    if held_back:
        lines.append(f"({held_back} earlier notification(s) of this run held back by the rate limit)")
    return {"text": "\n".join(lines), "event": alert["event"], "run_id": run_id, "project": project,
            "run_url": link, "dedupe_key": dedupe_key(alert), "held_back": held_back,
            "alert": encode_floats(alert)}


class RunRateLimit:
    """At most ``per_minute`` notifications per run in any 60 s window; the excess is held back
    (counted, and said in the run's next notification)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._sent: dict[str, deque[float]] = {}
        self._held: dict[str, int] = {}

    def admit(self, run: str) -> int | None:
        """None when the run (``<project>/<run_id>``) is over its limit (held back), else how many
        were held back before."""
        now = self.clock()
        q = self._sent.get(run)
        if q is None:
            if len(self._sent) >= 10_000:            # bounded: forget runs quiet for a minute
                self._forget(now)
            q = self._sent[run] = deque()
        while q and q[0] <= now - 60:
            q.popleft()
        if len(q) >= self.per_minute:
            self._held[run] = self._held.get(run, 0) + 1
            return None
        q.append(now)
        return self._held.pop(run, 0)

    def _forget(self, now: float) -> None:
        for run_id in [r for r, q in self._sent.items() if not q or q[-1] <= now - 60]:
            del self._sent[run_id]


def post_json(url: str, body: bytes, timeout: float) -> tuple[bool, bool, str]:
    """One POST (blocking; runs in a worker thread). Returns (delivered, worth a retry, why not)."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": f"losswatch/{__version__}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return True, False, ""
    except urllib.error.HTTPError as e:
        # the receiver answered: a 4xx other than 429 will not change by sending it again
        return False, e.code == 429 or e.code >= 500, f"HTTP {e.code}"
    except (OSError, ValueError) as e:            # refused, reset, timeout, DNS
        return False, True, f"{type(e).__name__}: {e}"


class Notifier:
    """Owns one queue and one worker task per receiver; ``submit`` never waits."""

    def __init__(self, receivers: Iterable[Receiver], *, public_url: str, per_minute: int,
                 counts: Callable[[str], None]) -> None:
        self.receivers = tuple(receivers)
        self.public_url = public_url
        self.limit = RunRateLimit(per_minute)
        self.counts = counts                    # ServiceMetrics.notification(result)
        self._queues = [asyncio.Queue(QUEUE_SIZE) for _ in self.receivers]
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(r, q), name=f"losswatch-notify-{r.tag}")
                       for r, q in zip(self.receivers, self._queues)]

    async def stop(self) -> None:
        """Give the queued notifications a moment to go out, then stop the workers."""
        try:
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues)), DRAIN_S)
        except asyncio.TimeoutError:
            log.warning("notifications still queued at shutdown dropped: %s",
                        ", ".join(f"{q.qsize()} for {r.where}" for r, q in zip(self.receivers, self._queues)
                                  if q.qsize()))
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def submit(self, alerts: Iterable[dict[str, Any]], project: str) -> None:
        """Queue the notifications of alerts this replica claimed (``IngestResult.notify``), from
        the request's event loop."""
        for alert in alerts:
            if not notifies(alert):
                continue
            held = self.limit.admit(f"{project}/{alert['run_id']}")   # per run: project and run id
            if held is None:
                self.counts("rate_limited")
                continue
            body: bytes | None = None
            for r, q in zip(self.receivers, self._queues):
                if r.project is not None and r.project != project:
                    continue
                if body is None:
                    body = json.dumps(message(alert, project, self.public_url, held)).encode()
                try:
                    q.put_nowait(body)
                except asyncio.QueueFull:
                    self.counts("queue_full")

    async def _work(self, r: Receiver, q: asyncio.Queue) -> None:
        while True:
            body = await q.get()
            try:
                await self._deliver(r, body)
            except asyncio.CancelledError:
                raise
            except Exception:                   # a bug must not stop the receiver's worker
                log.exception("notification to %s failed", r.where)
            finally:
                q.task_done()

    async def _deliver(self, r: Receiver, body: bytes) -> None:
        for attempt in range(ATTEMPTS):
            ok, retry, why = await asyncio.to_thread(post_json, r.url, body, TIMEOUT_S)
            if ok:
                self.counts("sent")
                return
            self.counts("failed")
            if not retry:
                break
            if attempt + 1 < ATTEMPTS:
                delay = min(BACKOFF_S * 2 ** attempt, BACKOFF_MAX_S)
                log.info("notification to %s failed (%s): retry in %.1f s", r.where, why, delay)
                await asyncio.sleep(delay * random.uniform(0.75, 1.0))
        self.counts("gave_up")
        log.warning("notification to %s given up (%s)", r.where, why)


def start_notifier(settings: Any, metrics: Any) -> Notifier | None:
    """The app's notifier, its workers running, or None without receivers (the app's lifespan
    stops it)."""
    if not settings.notify:
        return None
    if not settings.public_url:
        log.warning("losswatch: notifications link to %s: set LOSSWATCH_PUBLIC_URL (--public-url) to the "
                    "address users reach the service at", settings.link_base)
    n = Notifier(settings.notify, public_url=settings.link_base, per_minute=settings.notify_per_minute,
                 counts=metrics.notification)
    n.start()
    return n
