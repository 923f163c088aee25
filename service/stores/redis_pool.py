"""The Redis connection queue of one service process: turns to hold a connection, in arrival
order, that wait while Redis answers and give up promptly when it does not.

A burst (a fleet of runs that all close in the same second: each sends its last steps, then its
finished status) asks for more connections than the pool holds. redis-py's
``BlockingConnectionPool`` lets a request that has waited wait again behind one that just came
(a freed connection goes to whoever asks first), and gives up after one fixed timeout, the same
as for a Redis that stopped answering. Measured on such a close (bench/results/load.md): every
503 was a request of the burst's first tenth of a second that waited out the store timeout while
later ones were served, and each of them cost its run its last steps, because a retry after
``Retry-After`` no longer fitted in the client's exit.

Here a request takes a turn in arrival order (a freed connection is handed to the longest
waiter, never taken by a newcomer), and how long it may wait depends on whether Redis answers:

* while Redis answers (a burst, Redis busy serving others), it waits up to ``queue_timeout``, a
  bound chosen below the client's own request timeout so that the answer still finds its client;
* once it has waited a whole ``timeout`` (the store timeout) with no answer from Redis to anyone
  (stalled, or every connection stuck on a reply), it gives up then, as before: a store that
  cannot serve is a prompt 503 with Retry-After. It asks "did Redis answer since I last looked",
  not "did Redis answer within the last ``timeout``": in a large burst the process itself runs
  late, and a waiter woken late must not take that lag for a stall.

A waiter never gives up sooner than ``timeout`` after it came, as before. The store tells the
turns that Redis answered (:meth:`ConnectionTurns.answered`) after each call that succeeded. Both
of the store's pools take their connections on the same turns (:class:`QueuedConnectionPool`,
redis-py's, for most commands; :class:`~.redis_wire.WirePool` for a batch's commit), so a close
burst of steps and finished statuses is one queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

#: what a request that waited its queue time out is told (the store turns it into a 503 saying so)
NO_CONNECTION = "No connection available"
#: what a waiting request is told when Redis answered nobody for a whole store timeout (a stall)
STALLED = "No answer from Redis while waiting for a connection"


class ConnectionTurns:
    """Turns to hold one of ``limit`` Redis connections, handed in arrival order; a waiter waits
    while Redis answers and gives up promptly when it does not (see the module docstring).

    One object serves every pool of a store (redis-py's for most commands, the lean pool of
    :mod:`.redis_wire` for a batch's commit), so a burst queues once, in one order, whichever
    pool its requests go through.

    Parameters
    ----------
    limit : int
        Connections held at once at most.
    timeout : float
        Seconds without an answer from Redis after which a waiting request gives up (and the
        least any waiter waits).
    queue_timeout : float
        Seconds a request may wait for a turn at most while Redis answers (at least ``timeout``).

    Example
    -------
    >>> turns = ConnectionTurns(limit=64, timeout=2.0, queue_timeout=4.0)
    >>> async def call():
    ...     await turns.take()
    ...     try:
    ...         ...                      # use one connection
    ...     finally:
    ...         turns.give()
    """

    def __init__(self, *, limit: int, timeout: float, queue_timeout: float) -> None:
        self.limit = int(limit)
        self.timeout = float(timeout)
        self.queue_timeout = max(float(queue_timeout), self.timeout)   # never shorter than a stall's wait
        self.answered_at = float("-inf")   # monotonic time of the last call that Redis answered
        self._free = self.limit            # turns nobody holds
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Requests waiting for a turn now."""
        return sum(1 for w in self._waiters if not w.done())

    def answered(self) -> None:
        """Redis answered a call: waiters may go on waiting (a burst, not a stall)."""
        self.answered_at = time.monotonic()

    async def take(self) -> None:
        """Wait for a turn: at once when one is free and nobody waits, else behind those who came
        first. Give up (``ConnectionError``) after ``queue_timeout`` (:data:`NO_CONNECTION`), or
        once a whole ``timeout`` of waiting passed with no answer from Redis (:data:`STALLED`)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        came = look = time.monotonic()
        seen = self.answered_at
        try:
            while not turn.done():
                now = time.monotonic()
                # "Redis answered since my last look", not "answered within the last timeout":
                # a process busy with a burst looks late, and must not take its own lag for a stall
                if self.answered_at > seen:
                    seen, look = self.answered_at, now
                elif now - look >= self.timeout:
                    raise RedisConnectionError(STALLED)
                if now - came >= self.queue_timeout:
                    raise RedisConnectionError(NO_CONNECTION)
                left = min(came + self.queue_timeout, look + self.timeout) - now
                await asyncio.wait((turn,), timeout=left)
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.give()            # handed to us as we gave up: the next waiter has it
            else:
                turn.cancel()
                try:
                    self._waiters.remove(turn)
                except ValueError:
                    pass
            raise

    def give(self) -> None:
        """A turn ends: the longest waiter still waiting has it, else it is free."""
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1


class QueuedConnectionPool(aioredis.BlockingConnectionPool):
    """``BlockingConnectionPool`` whose connections are taken on :class:`ConnectionTurns`: its
    waiters are served in arrival order and wait while Redis answers.

    Parameters
    ----------
    turns : ConnectionTurns
        The turns this pool's callers queue for (shared with the store's other pool); its limit
        is this pool's ``max_connections``.
    **kwargs
        redis-py's ``BlockingConnectionPool`` arguments (``timeout``: seconds to connect).
    """

    def __init__(self, *, turns: ConnectionTurns, **kwargs) -> None:
        super().__init__(**kwargs)
        self.turns = turns
        self._holders: set[int] = set()     # id() of the connections handed out on a turn

    async def get_connection(self, command_name=None, *keys, **options):  # noqa: ANN001 (redis-py's)
        await self.turns.take()
        try:
            connection = await super().get_connection()
        except BaseException:
            # no connection was handed to us (one that failed to connect was released already,
            # before it was ours): the turn goes on
            self.turns.give()
            raise
        self._holders.add(id(connection))
        return connection

    async def release(self, connection) -> None:  # noqa: ANN001
        key = id(connection)
        if key in self._holders:
            self._holders.discard(key)
            self.turns.give()
        await super().release(connection)
