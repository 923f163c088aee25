"""HTTP to a losswatch service: the transport of a run that has a URL, and its connection.

:class:`HttpTransport` speaks the service's API for one run: ``PUT /v1/runs/<id>`` with the
metadata, ``POST /v1/runs/<id>/steps`` with batches of records (each answer carries the run's
verdict), ``POST /v1/runs/<id>/actions`` with action reports. It decides what an answer means:
2xx delivered; 5xx, 429, 408, 401, 403 and no answer at all are worth retrying
(:class:`~.transport.ServiceError`: the worker keeps the records and backs off); any other 4xx
means the request itself is wrong, so it is dropped with one warning per status code, except
that a 413 halves the batch and a 422 re-sends the batch record by record, so one bad record
does not cost its neighbours. Steps are idempotent on the service, so re-sending a batch whose
answer was lost is harmless. Every 2xx answer's ``X-Losswatch-Flush-Interval`` (a loaded service
asking its clients to send less often; none: no hint) becomes
:attr:`~.transport.Transport.flush_hint`, the metadata PUT's too: a run's first answer is that
one, so a run that starts into a loaded service sends its first batch at the hinted pace.

:class:`Connection` is one kept-alive ``http.client`` connection (also what the command-line
tools read a service with).
"""

from __future__ import annotations

import http.client
import json
import socket
import warnings
from collections import deque
from urllib.parse import quote, urlsplit

from .flush import HINT_HEADER, HINT_MAX
from .transport import ServiceError, Transport
from .values import encode
from .version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .spool import Spool
    from .transport import VerdictSink

#: batches one send() posts at most before it returns to the worker, so the buffer is drained
#: (and spilled) regularly even while a long backlog is replayed
BATCHES_PER_SEND = 64

# errors that mean "the kept-alive connection went stale": retry once on a fresh one
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
          ConnectionAbortedError, http.client.CannotSendRequest, http.client.ResponseNotReady)


class Reply:
    """One HTTP answer: status, headers (lower-case names) and the body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Connection:
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
                         "User-Agent": f"losswatch-client/{__version__}"}
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




def run_path(run_id: str) -> str:
    return "/v1/runs/" + quote(run_id, safe="")


def _flush_hint(headers: dict[str, str]) -> float:
    """The service's ``X-Losswatch-Flush-Interval`` (seconds; 0 without a usable one): a service
    under load asks its clients to send less often (docs/service-api.md)."""
    try:
        v = float(headers.get(HINT_HEADER.lower(), 0))
    except ValueError:
        return 0.0
    return min(v, HINT_MAX) if v > 0 else 0.0  # NaN and negatives say nothing


def _retry_after(headers: dict[str, str]) -> float | None:
    v = headers.get("retry-after")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None  # an HTTP date: rare from our service; fall back to the backoff


class HttpTransport(Transport):
    """One run's records and messages to a service (see the module docstring).

    Parameters
    ----------
    url : str
        ``http://host:port[/prefix]`` or ``https://...``.
    run_id, project : str
        The run. A run is named by its project and its run id, so every request names the
        project: in each batch's body, as ``?project=`` on the others.
    token : str, optional
        Bearer token.
    timeout : float
        Seconds per attempt (paid by the worker's thread, never the training thread).
    batch_size : int
        Records per POST (halved on each 413).
    on_verdict : callable
        ``on_verdict(alerts, recommendation, health, has_recommendation)`` with the answer to
        each accepted batch, and to each metadata PUT (see :meth:`_send_message`).
    """

    def __init__(self, url: str, *, run_id: str, project: str | None = None, token: str | None = None,
                 timeout: float = 5.0, batch_size: int = 500, on_verdict: VerdictSink) -> None:
        super().__init__()
        self.connection = Connection(url, token, timeout)
        self.url = self.connection.url
        self._settings: dict[str, Any] = dict(url=url, run_id=run_id, project=project, token=token,
                                              timeout=timeout, batch_size=batch_size, on_verdict=on_verdict)
        self.run_id = run_id
        self.project = project
        self.run_path = run_path(run_id)
        self._steps_path = self.run_path + "/steps"
        # the project travels with every batch too, so a run is created in it even if the
        # metadata PUT was lost
        self._body_head = ('{"project":' + json.dumps(project) + ',"records":[' if project
                           else '{"records":[')
        # a run is named by (project, run_id): the other requests (metadata, action reports)
        # name the project in the query, so a token of several projects reaches the same run
        self._project_query = "?project=" + quote(project, safe="") if project else ""
        self.batch_size = max(1, int(batch_size))
        self._on_verdict = on_verdict
        self.outbox: deque[tuple[str, str, Any]] = deque(maxlen=10_000)  # (method, path, payload)
        self.final_meta: dict[str, Any] | None = None  # the closing PUT, sent after the last records
        self._warned_status: set[int] = set()
        self._reply_warned = False

    @property
    def judges(self) -> bool:
        return True

    @property
    def waiting(self) -> int:
        return len(self.outbox) + (self.final_meta is not None)

    # ------------------------------------------------------------ worker thread
    def accept(self, records: list[dict[str, Any]]) -> list[str]:
        return [json.dumps(encode(r), allow_nan=False) for r in records]

    def send(self, spool: Spool) -> None:
        while self.outbox:
            self._send_message(*self.outbox[0], current=not len(spool))
            self.outbox.popleft()
        self._send_records(spool)
        if self.final_meta is not None and not len(spool):
            self._send_message("PUT", self.run_path, self.final_meta, current=True)
            self.final_meta = None

    def _send_message(self, method: str, path: str, payload: Any, current: bool) -> None:
        """One queued request. The answer to the run's metadata PUT is a verdict too: the alerts
        the new metadata resolved (detectors it took off), and, when no record waits to be sent
        (``current``: the service has seen all of them), the run's advice and health; with
        records still waiting those are older than what the client holds (a NaN caught here)."""
        # metadata may hold anything (a dtype, a Path): written as its str() rather than
        # blocking the queue behind an unserialisable request
        body = json.dumps(payload, default=str).encode()
        reply = self.connection.request(method, path + self._project_query, body)
        if self._check(reply, what=f"{method} {path}") and path == self.run_path:
            self._verdict_of(reply, advice=current)

    def _send_records(self, spool: Spool) -> None:
        """Up to BATCHES_PER_SEND batches of the spool's records, each popped once answered."""
        for _ in range(BATCHES_PER_SEND):
            batch = spool.peek(self.batch_size)
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
                    spool.pop(1)
                continue
            self._accepted(reply, len(batch))
            spool.pop(len(batch))

    def _post(self, lines: list[str]) -> Reply:
        """POST /steps with these encoded records (ServiceError when unreachable)."""
        body = (self._body_head + ",".join(lines) + "]}").encode()
        return self.connection.request("POST", self._steps_path, body)

    def _accepted(self, reply: Reply, n: int) -> None:
        """Count a POST /steps answer and hand a 2xx answer's verdict on (ServiceError if retryable)."""
        if self._check(reply, what=f"POST {self._steps_path}"):
            self.stats["sent"] += n
            self.stats["posts"] += 1
            self._verdict_of(reply, advice=True)
        else:
            self.stats["rejected"] += n

    def _check(self, reply: Reply, what: str) -> bool:
        """True for 2xx. Raise ServiceError for retryable answers; False for a rejected request."""
        s = reply.status
        if 200 <= s < 300:
            self.flush_hint = _flush_hint(reply.headers)  # each answer sets it anew (none: 0)
            return True
        if s in (429, 503) or s >= 500 or s in (401, 403, 408):
            detail = reply.body[:200].decode(errors="replace")
            raise ServiceError(f"{what} -> HTTP {s} {detail}", _retry_after(reply.headers), status=s)
        # any other 4xx: the request itself is wrong and retrying cannot help; say so once per code
        if s not in self._warned_status:
            self._warned_status.add(s)
            warnings.warn(f"losswatch: the service rejected {what} with HTTP {s}: "
                          f"{reply.body[:300].decode(errors='replace')}", RuntimeWarning, stacklevel=2)
        return False

    def _verdict_of(self, reply: Reply, advice: bool) -> None:
        """Hand a 2xx answer's verdict on: its alert changes and, with ``advice``, its advice
        and health (a batch's answer; a metadata PUT's, see :meth:`_send_message`)."""
        try:
            answer = reply.json()
            if isinstance(answer, dict):
                self._on_verdict(answer.get("alerts") or [], answer.get("recommendation") if advice else None,
                                 answer.get("health") if advice else None, advice and "recommendation" in answer)
        except Exception as e:
            if not self._reply_warned:
                self._reply_warned = True
                warnings.warn(f"losswatch: could not read the service's answer: {e!r}",
                              RuntimeWarning, stacklevel=2)

    def abort(self) -> bool:
        self.connection.abort()
        return True

    # ------------------------------------------------------------ the Monitor
    def open_run(self, meta: dict[str, Any]) -> None:
        self.set_meta(meta)

    def _meta_body(self, meta: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = dict(meta)  # the service keeps unknown fields as they are
        if self.project is not None:
            body["project"] = self.project
        return body

    def set_meta(self, meta: dict[str, Any]) -> bool:
        self.outbox.append(("PUT", self.run_path, self._meta_body(meta)))  # PUT replaces the whole metadata
        return True

    def close_run(self, meta: dict[str, Any]) -> bool:
        self.final_meta = self._meta_body(meta)
        return True

    def report_action(self, entry: dict[str, Any]) -> bool:
        self.outbox.append(("POST", self.run_path + "/actions", entry))
        return True

    def for_child(self) -> HttpTransport:
        # a connection of its own; the parent's queued messages stay the parent's
        return HttpTransport(**self._settings)

    def finish(self, spool: Spool, buffered: int, worker_stuck: bool) -> str | None:
        self.connection.close()
        if worker_stuck:
            n = len(spool) + buffered
            if n:
                return (f"losswatch: {n} unsent records of run {self.run_id} were lost: the sender was "
                        f"still waiting for {self.url} at the end")
        elif len(spool):
            path = spool.spill_all()
            status = " (nor was the run's finished status sent)" if self.final_meta is not None else ""
            return (f"losswatch: the service at {self.url} could not be reached before the end{status}; "
                    f"unsent records of run {self.run_id} are kept in {path}")
        elif self.final_meta is not None:
            # every step is stored; only the status is missing, which the user should know: the
            # run will look as if it stopped reporting, not as if it finished
            return (f"losswatch: every step of run {self.run_id} reached {self.url}, but not its "
                    f"finished status (the service did not take it before the end): the run will "
                    f"look stopped, not finished")
        return None
