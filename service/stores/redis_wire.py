"""A lean connection pool for the Redis store's hot path: the COMMIT script of every batch and the
snapshot load, as one pipelined round trip each.

redis-py's asyncio client spends ~90 us of the service's CPU on every command it sends (a pool
guarded by an ``asyncio.Condition``, a timeout context per read and per write, retry and
observability hooks, argument encoding in Python), where the round trip itself, written by
hiredis and read by hiredis' parser on a plain asyncio protocol, costs ~20 us
(bench/results/ingest-breakdown.md). A batch makes one such call, so the store sends it here;
every other command (reads, downsampling transactions, policies, the readiness write) stays on
redis-py.

What it keeps of redis-py's behaviour, so that the store maps failures the same way:

* the same exceptions: an error reply becomes redis-py's exception for it (``NoScriptError``,
  ``OutOfMemoryError``, ``BusyLoadingError``, a ``ResponseError`` with its ``status_code``...);
  a refused or lost connection a ``ConnectionError``; no connection or no reply within its
  timeout a ``TimeoutError``; no turn for a connection in time (the queue it shares with
  redis-py's pool, :class:`~.redis_pool.ConnectionTurns`) a ``ConnectionError``, as redis-py's
  blocking pool says it;
* no retry: a command whose connection fails is not sent again (the caller answers 503 and the
  client resends; COMMIT's version check makes a resend harmless anyway);
* a connection that failed, timed out or was cancelled mid-call is closed, never reused (its
  reply may still come and would answer the next call); one idle for longer than
  ``idle_s`` is closed rather than trusted (a peer may have dropped it silently), in place of
  redis-py's health-check PING;
* ``redis://`` and ``unix://`` URLs with a user, a password and a database number. TLS
  (``rediss://``) and Redis Cluster are redis-py's alone (:func:`serves`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

import hiredis
from redis import exceptions as rexc
from redis._parsers.base import BaseParser
from redis.asyncio.connection import parse_url

from .redis_pool import ConnectionTurns

Command = Sequence[Any]     # a command and its arguments: str, bytes or int (floats as repr, by the caller)


def serves(url: str) -> bool:
    """Whether this pool can talk to the Redis of ``url`` (plain TCP or a Unix socket)."""
    return url.lower().startswith(("redis://", "unix://"))


def _raise_first_error(replies: list[Any]) -> list[Any]:
    """The replies, unless one is an error reply: then the first, raised as redis-py would."""
    for r in replies:
        if isinstance(r, hiredis.ReplyError):
            raise BaseParser.parse_error(str(r))
    return replies


class _Connection(asyncio.Protocol):
    """One connection: one call at a time, its replies parsed by hiredis as they arrive."""

    def __init__(self, where: str, loop: asyncio.AbstractEventLoop) -> None:
        self.where = where
        self.loop = loop
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.replies: list[Any] = []
        self.want = 0
        self.closed = False
        self.idle_since = 0.0

    # --- asyncio.Protocol ---
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None:          # a reply nobody asked for: the connection is out of step
            self.close()
            return
        self.reader.feed(data)
        try:
            while len(self.replies) < self.want:
                r = self.reader.gets()
                if r is False:
                    return
                self.replies.append(r)
        except hiredis.ProtocolError as e:
            self._fail(rexc.InvalidResponse(f"Protocol error from {self.where}: {e}"))
            self.close()
            return
        self.waiter = None
        if not waiter.done():
            waiter.set_result(self.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(rexc.ConnectionError(f"Connection to {self.where} lost" + (f": {exc}" if exc else "")))

    # --- calls ---
    async def call(self, data: bytes, n: int, timeout: float) -> list[Any]:
        """Send ``data`` (``n`` commands) and wait for their ``n`` replies."""
        loop = self.loop
        self.replies, self.want = [], n
        waiter = self.waiter = loop.create_future()
        self.transport.write(data)      # type: ignore[union-attr]
        timer = loop.call_later(timeout, self._timed_out, timeout)
        try:
            return await waiter
        finally:
            timer.cancel()

    def _timed_out(self, timeout: float) -> None:
        self._fail(rexc.TimeoutError(f"Timeout reading from {self.where} ({timeout:g} s)"))
        self.close()

    def _fail(self, err: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.loop.is_closed():   # (a closed loop took its sockets)
            self.transport.close()


class WirePool:
    """Connections to one Redis, for pipelined calls (:meth:`execute`).

    Parameters
    ----------
    url : ``redis://[[user]:password@]host[:port][/db]`` or ``unix://path?db=N`` (:func:`serves`).
    turns : the :class:`~.redis_pool.ConnectionTurns` a call waits for before it takes a
        connection (shared with the store's redis-py pool: one queue, in arrival order, for both;
        its limit bounds the connections this pool holds).
    connect_timeout : seconds to connect (and authenticate).
    reply_timeout : seconds to wait for the replies of a call.
    idle_s : a connection unused for this long is closed instead of used.

    Errors name the server by host and port (or socket path), never with the URL's password.
    """

    def __init__(self, url: str, *, turns: ConnectionTurns, connect_timeout: float, reply_timeout: float,
                 idle_s: float = 30.0) -> None:
        if not serves(url):
            raise ValueError("the lean pool takes a redis:// or unix:// URL (TLS and Cluster: redis-py)")
        kw = parse_url(url)
        self.host = kw.get("host", "localhost")
        self.port = kw.get("port", 6379)
        self.path = kw.get("path")
        self.db = int(kw.get("db", 0) or 0)
        self.username = kw.get("username")
        self.password = kw.get("password")
        self.turns = turns
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.idle_s = idle_s
        self.where = self.path or f"{self.host}:{self.port}"
        self._idle: list[_Connection] = []       # most recently used last
        self._open = 0                           # connections open or being opened

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send the commands in one write and return their replies, in order; if any reply is an
        error, raise the first one as redis-py would (every reply has been read)."""
        data = b"".join([hiredis.pack_command(tuple(c)) for c in commands])
        await self.turns.take()
        try:
            conn = await self._acquire()
            try:
                replies = await conn.call(data, len(commands), self.reply_timeout)
            except BaseException:
                self._drop(conn)
                raise
            self._release(conn)
        finally:
            self.turns.give()
        return _raise_first_error(replies)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for c in idle:
            self._drop(c)

    # --- the pool (a caller holds a turn, so at most the turns' limit are in use at once) ---
    async def _acquire(self) -> _Connection:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        while self._idle:
            c = self._idle.pop()
            if not c.closed and now - c.idle_since < self.idle_s and c.loop is loop:
                return c
            self._drop(c)     # closed, idle too long, or of an event loop that has ended
        self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            raise

    def _release(self, c: _Connection) -> None:
        if c.closed:
            self._drop(c)
            return
        c.idle_since = time.monotonic()
        self._idle.append(c)

    def _drop(self, c: _Connection) -> None:
        """Close a connection that must not be used again (failed, stale, or its call unfinished)."""
        c.close()
        self._open -= 1

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()

        def make() -> _Connection:
            return _Connection(self.where, loop)

        opening = (loop.create_unix_connection(make, self.path) if self.path
                   else loop.create_connection(make, self.host, self.port))
        try:
            _, conn = await asyncio.wait_for(opening, self.connect_timeout)
        except asyncio.TimeoutError:
            raise rexc.TimeoutError(f"Timeout connecting to {self.where}") from None
        except OSError as e:
            raise rexc.ConnectionError(f"Error connecting to {self.where}: {e}") from e
        setup: list[tuple] = []
        if self.password:
            setup.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        if setup:
            try:
                _raise_first_error(await conn.call(b"".join(hiredis.pack_command(c) for c in setup), len(setup),
                                                   self.connect_timeout))
            except BaseException:
                conn.close()
                raise
        return conn
