"""The background half of the client: one daemon thread that batches, sends and retries.

The training thread only appends to a buffer (``Monitor.log``). This thread wakes every
``flush_interval`` seconds, or as soon as ``batch_size`` records are waiting, and then

1. collects: drains the buffer, reads tensors in one go, runs the local checks, encodes
   (``Monitor._collect``), and appends the encoded records to the :class:`~.spool.Spool`;
2. sends what is waiting, oldest first, ``batch_size`` records per POST over one kept-alive
   ``http.client`` connection; a record leaves the spool only once the service said 2xx.

A service that is down, slow or overloaded costs the training loop nothing: the thread backs off
exponentially (with jitter, honouring ``Retry-After`` on 503/429) while the spool keeps what
could not be sent (bounded memory, then disk), and warns once per outage, not once per step.
Steps are idempotent on the service side, so re-sending a batch whose reply was lost is harmless.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import time
import warnings
from collections import deque
from urllib.parse import quote, urlsplit

from .spool import Spool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

log = logging.getLogger("losswatch.client")

#: what stop() keeps of its time to cut a hung request short and let the thread write its last
#: cycle (half of a shorter timeout, but never less than this once a request was cut short)
ABORT_GRACE = 0.25

#: the longest wait between sends that a service's flush hint can ask for, seconds
MAX_FLUSH_HINT = 30.0

# errors that mean "the kept-alive connection went stale": retry once on a fresh one
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
          ConnectionAbortedError, http.client.CannotSendRequest, http.client.ResponseNotReady)


class ServiceError(Exception):
    """The service could not be reached or answered 5xx/429/401/403: keep the data, retry later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Reply:
    """One HTTP answer: status, headers (lower-case names) and the body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Transport:
    """HTTP/1.1 to one service over a kept-alive connection (standard library only).

    Parameters
    ----------
    url : str
        ``http://host:port[/prefix]`` or ``https://...``.
    token : str, optional
        Sent as ``Authorization: Bearer <token>``.
    timeout : float
        Seconds for connect and for each read; a stopped or wedged service costs this much of
        the background thread's time per attempt, never the training thread's.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"losswatch: url must look like http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": "losswatch-client/0.1"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = False

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        conn.connect()
        try:  # small JSON POSTs: do not let Nagle hold them back
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        return conn

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        """Send one request; raise :class:`ServiceError` when the service is unreachable."""
        for attempt in (0, 1):
            if self._aborted:
                raise ServiceError("the client is closing: no more requests")
            reused = self._conn is not None
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._conn.request(method, self._prefix + path, body=body, headers=self._headers)
                resp = self._conn.getresponse()
                data = resp.read()
                headers = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self.close()
                return Reply(resp.status, headers, data)
            except _STALE as e:
                self.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: one fresh try
                raise ServiceError(f"{type(e).__name__}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise ServiceError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
        raise AssertionError("unreachable")

    def abort(self) -> None:
        """From another thread: cut short the request under way and refuse further ones. The
        socket is shut down, so a read blocked on a service that never answers returns now
        rather than after ``timeout``."""
        self._aborted = True
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


def _flush_hint(headers: dict[str, str]) -> float:
    """The service's ``X-Losswatch-Flush-Interval`` (seconds; 0 without a usable one): a service
    under load asks its clients to send less often (docs/service-api.md)."""
    try:
        v = float(headers.get("x-losswatch-flush-interval", 0))
    except ValueError:
        return 0.0
    return min(v, MAX_FLUSH_HINT) if v > 0 else 0.0  # NaN and negatives say nothing


def _retry_after(headers: dict[str, str]) -> float | None:
    v = headers.get("retry-after")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None  # an HTTP date: rare from our service; fall back to the backoff


class Sender:
    """The daemon thread. See the module docstring for what one cycle does.

    Parameters
    ----------
    collect : callable
        ``collect() -> list[str]``: drain the training thread's buffer, return encoded records
        to send (``[]`` when there is no service). Runs in this thread.
    pending : callable
        ``pending() -> int``: records still in the training thread's buffer (for flush()).
    after_cycle : callable
        Runs at the end of each cycle in this thread (user callbacks are fired there).
    on_reply : callable
        ``on_reply(dict)`` with the JSON answer of each accepted POST /steps.
    transport : Transport or None
        None when there is no service (local mode): records are collected, not sent.
    spool : Spool
    run_path : str
        ``/v1/runs/<run_id>``, URL-quoted.
    """

    def __init__(self, *, collect: Callable[[], list[str]], pending: Callable[[], int],
                 after_cycle: Callable[[], None], on_reply: Callable[[Any], None],
                 transport: Transport | None, spool: Spool, run_path: str,
                 project: str | None = None, batch_size: int = 500, flush_interval: float = 0.5,
                 max_backoff: float = 10.0,
                 name: str = "losswatch-sender") -> None:
        self._collect = collect
        self._pending = pending
        self._after_cycle = after_cycle
        self._on_reply = on_reply
        self.transport = transport
        self.spool = spool
        self.run_path = run_path
        self._steps_path = run_path + "/steps"
        # the project travels with every batch too, so a run is created in it even if the
        # metadata PUT was lost
        self._body_head = ('{"project":' + json.dumps(project) + ',"records":[' if project
                           else '{"records":[')
        # a run is named by (project, run_id): the other requests (metadata, action reports)
        # name the project in the query, so a token of several projects reaches the same run
        self._project_query = "?project=" + quote(project, safe="") if project else ""
        self.batch_size = max(1, int(batch_size))
        self.flush_interval = max(0.01, float(flush_interval))  # 0 would spin
        self.flush_hint = 0.0  # the last answer's flush hint (see interval)
        self._phase = random.random()  # where in a hinted interval this run sends (_wait_time)
        self.max_backoff = float(max_backoff)
        self.controls: deque[tuple[str, str, Any]] = deque(maxlen=10_000)
        self.wake = threading.Event()
        self._cond = threading.Condition()
        self._stop = False
        self._stop_send = True
        self._force = False
        self._busy = False
        self._retry_at = 0.0
        self._failures = 0
        self._outage_since: float | None = None
        self._warned_status: set[int] = set()
        self.stats = {"sent": 0, "posts": 0, "rejected": 0, "failures": 0, "outages": 0}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- thread
    def _run(self) -> None:
        while True:
            self.wake.wait(self._wait_time())
            self.wake.clear()
            with self._cond:
                stopping, force, self._force = self._stop, self._force, False
                self._busy = True
            try:
                lines = self._collect()
                if lines:
                    self.spool.extend(lines)
                    if self.spool.spill_error:
                        _warn_once(self, "spill", f"losswatch: cannot spill unsent records to "
                                                  f"{self.spool.directory} ({self.spool.spill_error}); "
                                                  f"keeping up to {2 * self.spool.max_memory} in memory")
                if self.transport is not None and not (stopping and not self._stop_send):
                    self._send(force=force or stopping)
            except Exception as e:  # never let a bug here kill the thread (or the training)
                _warn_once(self, "internal", f"losswatch: internal error in the sender: {e!r}")
            try:
                self._after_cycle()
            except Exception as e:
                _warn_once(self, "after_cycle", f"losswatch: internal error after a flush: {e!r}")
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            if stopping:
                return

    @property
    def interval(self) -> float:
        """Seconds between sends: the flush interval, or longer while the service's last answer
        asked for that (its flush hint); a full batch goes at once either way."""
        return max(self.flush_interval, self.flush_hint)

    def _wait_time(self) -> float:
        wait = self.interval
        if wait > self.flush_interval:
            # hinted: send at this run's own phase of the interval, not one interval after the
            # last answer, so runs answered together after a stall of the service do not send
            # together again
            wait = max(self.flush_interval, wait * (1.0 - (time.monotonic() / wait + self._phase) % 1.0))
        if self._retry_at:
            return max(0.0, min(wait, self._retry_at - time.monotonic()))
        return wait

    def _send(self, force: bool) -> None:
        if not force and time.monotonic() < self._retry_at:
            return
        try:
            while self.controls:
                method, path, payload = self.controls[0]
                # metadata may hold anything (a dtype, a Path): written as its str() rather than
                # blocking the queue behind an unserialisable request
                body = json.dumps(payload, default=str).encode()
                reply = self.transport.request(method, path + self._project_query, body)
                self._check(reply, what=f"{method} {path}")
                self.controls.popleft()
            # bounded work per cycle, so the buffer is drained (and spilled) regularly even
            # while a long backlog is replayed
            for _ in range(64):
                batch = self.spool.peek(self.batch_size)
                if not batch:
                    break
                reply = self._post(batch)
                if reply.status == 413 and len(batch) > 1:
                    self.batch_size = max(1, len(batch) // 2)  # the service caps batch size
                    continue
                if reply.status == 422 and len(batch) > 1:
                    # one bad record must not cost its neighbours: send them one by one, each
                    # off the spool once answered (a retryable failure midway resends the rest
                    # only, not what the service already stored)
                    for line in batch:
                        self._accepted(self._post([line]), 1)
                        self.spool.pop(1)
                    continue
                self._accepted(reply, len(batch))
                self.spool.pop(len(batch))
        except ServiceError as e:
            self._failed(e)
            return
        if self._outage_since is not None:
            log.warning("losswatch: %s is reachable again after %.1f s; kept records are being sent",
                        self.transport.url, time.monotonic() - self._outage_since)
            self._outage_since = None
        self._failures = 0
        self._retry_at = 0.0
        if len(self.spool):
            self.wake.set()  # a backlog is being replayed: next cycle at once, not after the interval

    def _post(self, lines: list[str]) -> Reply:
        """POST /steps with these encoded records (ServiceError when unreachable)."""
        body = (self._body_head + ",".join(lines) + "]}").encode()
        return self.transport.request("POST", self._steps_path, body)

    def _accepted(self, reply: Reply, n: int) -> None:
        """Count a POST /steps answer and hand a 2xx body to on_reply (ServiceError if retryable)."""
        if self._check(reply, what=f"POST {self._steps_path}"):
            self.flush_hint = _flush_hint(reply.headers)
            self.stats["sent"] += n
            self.stats["posts"] += 1
            try:
                self._on_reply(reply.json())
            except Exception as e:
                _warn_once(self, "reply", f"losswatch: could not read the service's answer: {e!r}")
        else:
            self.stats["rejected"] += n

    def _check(self, reply: Reply, what: str) -> bool:
        """True for 2xx. Raise ServiceError for retryable answers; False for a rejected request."""
        s = reply.status
        if 200 <= s < 300:
            return True
        if s in (429, 503) or s >= 500 or s in (401, 403, 408):
            detail = reply.body[:200].decode(errors="replace")
            raise ServiceError(f"{what} -> HTTP {s} {detail}", _retry_after(reply.headers))
        # any other 4xx: the request itself is wrong and retrying cannot help; say so once per code
        if s not in self._warned_status:
            self._warned_status.add(s)
            warnings.warn(f"losswatch: the service rejected {what} with HTTP {s}: "
                          f"{reply.body[:300].decode(errors='replace')}", RuntimeWarning, stacklevel=2)
        return False

    def _failed(self, e: ServiceError) -> None:
        self.stats["failures"] += 1
        self._failures += 1
        if e.retry_after is not None:
            delay = min(e.retry_after, 60.0)
        else:
            delay = min(self.max_backoff, 0.25 * 2 ** min(self._failures, 16))
            delay *= random.uniform(0.8, 1.2)
        self._retry_at = time.monotonic() + delay
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.stats["outages"] += 1
            warnings.warn(
                f"losswatch: cannot send to {self.transport.url} ({e}); training goes on, "
                f"{len(self.spool)} records are kept (memory, then {self.spool.directory}) and "
                f"will be sent when it is back", RuntimeWarning, stacklevel=2)

    # ---------------------------------------------------------------- control
    def idle(self) -> bool:
        """Nothing buffered, spooled or being worked on."""
        no_send = self.transport is None
        return (not self._busy and self._pending() == 0
                and (no_send or (len(self.spool) == 0 and not self.controls)))

    def flush(self, timeout: float, give_up_on_failure: bool = False) -> bool:
        """Send everything logged so far now (ignoring the backoff once); wait up to ``timeout``.

        ``give_up_on_failure``: return False as soon as the attempt made for this flush failed,
        instead of waiting out ``timeout`` for a retry (at exit: do not hold the process up for
        a service that is down).

        Called from this thread itself (an ``on_alert`` callback that flushes) it cannot wait
        for itself: it only says whether everything is sent already.
        """
        if threading.current_thread() is self._thread:
            return self.idle()
        failures_before = self.stats["failures"]
        deadline = time.monotonic() + timeout
        with self._cond:
            self._force = True
        self.wake.set()
        with self._cond:
            while True:
                if not self._busy and self.idle() and not self._force:
                    return True
                if give_up_on_failure and self.stats["failures"] > failures_before and not self._force:
                    return False
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return self.idle()
                self._cond.wait(min(left, 0.05))

    def stop(self, timeout: float, send: bool = True) -> None:
        """Last cycle (collect, and send once unless ``send`` is False) and end the thread,
        waiting at most ``timeout``: a request still under way near the end (a service that
        accepted the connection and never answers) is cut short, so the thread can still put
        its last records in the spool before the time is up. That local work gets at least
        ABORT_GRACE even when ``timeout`` is shorter: records are not dropped to save 0.25 s."""
        end = time.monotonic() + timeout
        with self._cond:
            self._stop = True
            self._stop_send = send
        self.wake.set()
        if threading.current_thread() is self._thread:  # close() from a callback: no self-join
            return
        self._thread.join(max(0.0, timeout - min(ABORT_GRACE, timeout / 2)))
        if self._thread.is_alive() and self.transport is not None:
            self.transport.abort()
            self._thread.join(max(ABORT_GRACE, end - time.monotonic()))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def run_path(run_id: str) -> str:
    return "/v1/runs/" + quote(run_id, safe="")


def _warn_once(owner: Any, key: str, message: str) -> None:
    seen = owner.__dict__.setdefault("_warned_keys", set())
    if key not in seen:
        seen.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
