"""The background half of the client: one daemon thread that collects, sends and retries.

The training thread only appends to :attr:`Worker.buffer` (``Monitor.log``). The thread wakes
every :attr:`Worker.flush_interval` seconds (longer while a loaded service asks for it:
:attr:`Worker.interval`), or as soon as it is woken (a full batch, a NaN, a message to send, a
flush), and in each cycle

1. drains the buffer and reads the records (``read``: tensors read in one go, the local checks),
   hands them to the run's :class:`~.transport.Transport`, and keeps what the transport will
   send in the :class:`~.spool.Spool` (bounded memory, then disk);
2. asks the transport to send what waits; a record leaves the spool only once it was delivered;
3. runs ``after_cycle`` (the user's callbacks are told of new alert events there).

A transport that cannot deliver costs the training loop nothing: the worker backs off
exponentially (with jitter, or after the ``Retry-After`` the service asked for) while the spool
keeps what could not be sent, and warns once per outage, not once per step.

Fork safety: the thread does not survive a fork. :attr:`Worker.in_this_process` (a pid check)
tells the Monitor whether this worker is its process's own; a forked child never touches its
parent's worker (whose locks may have been copied held).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import warnings
from collections import deque

from .flush import DEFAULT_INTERVAL
from .transport import ServiceError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .spool import Spool
    from .transport import Transport

log = logging.getLogger("losswatch.client")

#: what stop() keeps of its time to cut a hung request short and let the thread write its last
#: cycle (half of a shorter timeout, but never less than this once a request was cut short)
ABORT_GRACE = 0.25

#: the shortest wait between two cycles (0 would spin)
MIN_INTERVAL = 0.01


class Worker:
    """The daemon thread of one run (see the module docstring).

    Parameters
    ----------
    transport : Transport
        Where the records go.
    read : callable
        ``read(raw) -> records``: turn the buffer's tuples into resolved record dicts and run the
        local checks on them. Runs in this thread.
    after_cycle : callable
        Runs at the end of each cycle in this thread.
    spool : Spool
        Keeps the encoded records the transport has not delivered yet.
    flush_interval : float
        Seconds between two cycles at most, unless the service asks for longer (the transport's
        flush hint); read at each cycle, so it may be changed at any time.
    max_backoff : float
        Longest wait between two attempts while the transport fails.
    """

    def __init__(self, transport: Transport, *, read: Callable[[list[tuple]], list[dict[str, Any]]],
                 after_cycle: Callable[[], None], spool: Spool, flush_interval: float = DEFAULT_INTERVAL,
                 max_backoff: float = 10.0, name: str = "losswatch-worker") -> None:
        self.transport = transport
        self.spool = spool
        #: the training thread's records, appended by ``Monitor.log`` (a deque: thread-safe
        #: append and popleft under the GIL, no lock on the hot path)
        self.buffer: deque[tuple] = deque()
        #: set to run a cycle now instead of at the end of the interval
        self.wake = threading.Event()
        self.flush_interval = flush_interval
        self._phase = random.random()  # where in a hinted interval this run sends (_wait_time)
        self.max_backoff = float(max_backoff)
        self._read = read
        self._after_cycle = after_cycle
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._stop = False
        self._stop_send = True
        # stopped from this thread (close() in an on_alert callback): nobody waits for it, so its
        # last cycle keeps what it could not send itself (finish)
        self._finish_on_thread = False
        self._force = False
        self._busy = False
        self._retry_at = 0.0
        self._failures = 0
        # when a retry of the last failure would be answered: the time the service asked to be
        # retried at plus what the failed attempt took; never for a service that did not answer
        # or did not say it was busy (what an exit waits for: flush(give_up_on_failure=True))
        self._retry_answered_by = float("inf")
        # the run's closing metadata, handed to the transport by the first cycle that collects
        # after close(): only then are all the steps logged before it in the spool, ahead of it
        self._closing: dict[str, Any] | None = None
        self._outage_since: float | None = None
        self._warned: set[str] = set()
        self.stats = {"failures": 0, "outages": 0}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- process and thread
    @property
    def in_this_process(self) -> bool:
        """This process started this worker (False in a forked child: its thread is not there)."""
        return os.getpid() == self._pid

    @property
    def on_its_thread(self) -> bool:
        """Called from this worker's own thread (an on_alert callback that flushes or closes)."""
        return threading.current_thread() is self._thread

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---------------------------------------------------------------- thread
    def _run(self) -> None:
        wait = self._first_wait()
        while True:
            self.wake.wait(wait)
            self.wake.clear()
            with self._cond:
                stopping, force, self._force = self._stop, self._force, False
                self._busy = True
            try:
                self._collect()
                if not (stopping and not self._stop_send):
                    self._send(force=force or stopping)
                    if stopping and self._finish_on_thread:
                        self._send_backlog()
            except Exception as e:  # never let a bug here kill the thread (or the training)
                self._warn_once("internal", f"losswatch: internal error in the worker thread: {e!r}")
            try:
                self._after_cycle()
            except Exception as e:
                self._warn_once("after_cycle", f"losswatch: internal error after a flush: {e!r}")
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            if stopping:
                if self._finish_on_thread:
                    self._finish_here()
                return
            wait = self._wait_time()

    @property
    def flush_interval(self) -> float:
        return self._flush_interval

    @flush_interval.setter
    def flush_interval(self, seconds: float) -> None:
        # checked here, in the caller's thread: a bad value read by the worker's loop would stop
        # the thread and strand the records buffered after it
        try:
            v = float(seconds)
        except (TypeError, ValueError):
            v = float("nan")
        if not 0.0 <= v < float("inf"):   # 0: as often as MIN_INTERVAL allows
            raise ValueError(f"flush_interval must be a finite number of seconds >= 0, got {seconds!r}")
        self._flush_interval = v

    @property
    def interval(self) -> float:
        """Seconds between cycles: the flush interval, or longer while the service's last answer
        asked for that (the transport's flush hint); a full batch goes at once either way."""
        return max(MIN_INTERVAL, self._flush_interval, self.transport.flush_hint)

    def _first_wait(self) -> float:
        """Until the first cycle: one interval and this run's phase of another. Runs started
        together (a job array, a sweep) do not announce themselves to the service in the same
        instant, nor keep sending in step after that; a run's first steps wait at most one more
        interval (a NaN wakes the thread at once, as always)."""
        return max(MIN_INTERVAL, self._flush_interval) * (1.0 + self._phase)

    def _wait_time(self) -> float:
        own = max(MIN_INTERVAL, self._flush_interval)
        wait = self.interval
        if wait > own:
            # hinted: send at this run's own phase of the interval, not one interval after the
            # last answer, so runs answered together after a stall of the service do not send
            # together again
            wait = max(own, wait * (1.0 - (time.monotonic() / wait + self._phase) % 1.0))
        if self._retry_at:
            return max(0.0, min(wait, self._retry_at - time.monotonic()))
        return wait

    def close_run(self, meta: dict[str, Any]) -> None:
        """The run ends with this metadata: sent after every step logged before this call (a
        cycle already under way may hold some of them back in the buffer)."""
        self._closing = dict(meta)
        self.wake.set()

    def _collect(self) -> None:
        """Drain the buffer; read the records; keep what the transport is to send; then, if the
        run has closed, its closing metadata (read first: every step logged before close() is in
        the buffer by then, so it is drained ahead of the metadata)."""
        closing = self._closing
        self._drain()
        if closing is not None:
            self._closing = None
            self.transport.close_run(closing)

    def _drain(self) -> None:
        q = self.buffer
        n = len(q)
        if not n:
            return
        records = self._read([q.popleft() for _ in range(n)])
        lines = self.transport.accept(records)
        if lines:
            spool = self.spool
            spool.extend(lines)
            if spool.spill_error:
                self._warn_once("spill", f"losswatch: cannot spill unsent records to {spool.directory} "
                                         f"({spool.spill_error}); keeping up to {2 * spool.max_memory} "
                                         f"in memory")

    def _send(self, force: bool) -> None:
        if not force and time.monotonic() < self._retry_at:
            return
        started = time.monotonic()
        try:
            self.transport.send(self.spool)
        except ServiceError as e:
            self._failed(e, took=time.monotonic() - started)
            return
        if self._outage_since is not None:
            log.warning("losswatch: %s is reachable again after %.1f s; kept records are being sent",
                        self.transport.url, time.monotonic() - self._outage_since)
            self._outage_since = None
        self._failures = 0
        self._retry_at = 0.0
        if len(self.spool):
            self.wake.set()  # a backlog is being replayed: next cycle at once, not after the interval

    def _send_backlog(self) -> None:
        """The last cycle of a thread stopped from itself (a close inside ``on_alert``): one send
        takes a bounded number of batches, and no later cycle will come for the rest, so send on
        while each send succeeds and leaves less behind (what stays goes to the unsent file)."""
        left = len(self.spool)
        while left and self._failures == 0:
            self._send(force=True)
            if len(self.spool) >= left:
                return
            left = len(self.spool)

    def _failed(self, e: ServiceError, took: float) -> None:
        self._failures += 1
        if e.retry_after is not None:
            # never sooner than asked, and not all at once: runs refused together (a burst of
            # closing runs) would otherwise come back together
            delay = min(e.retry_after * random.uniform(1.0, 1.2), 60.0)
        else:
            delay = min(self.max_backoff, 0.25 * 2 ** min(self._failures, 16))
            delay *= random.uniform(0.8, 1.2)
        with self._cond:  # flush() reads both under the lock: it must never see the new failure
            # with the previous retry's answer time
            self._retry_at = time.monotonic() + delay
            self._retry_answered_by = self._retry_at + took if e.busy else float("inf")
            self.stats["failures"] += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.stats["outages"] += 1
            warnings.warn(
                f"losswatch: cannot send to {self.transport.url} ({e}); training goes on, "
                f"{len(self.spool)} records are kept (memory, then {self.spool.directory}) and "
                f"will be sent when it is back", RuntimeWarning, stacklevel=2)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # ---------------------------------------------------------------- control
    def idle(self) -> bool:
        """Nothing buffered, spooled, queued or being worked on."""
        return (not self._busy and len(self.buffer) == 0 and len(self.spool) == 0
                and self._closing is None and self.transport.waiting == 0)

    def flush(self, timeout: float, give_up_on_failure: bool = False) -> bool:
        """Send everything logged so far now (ignoring the backoff once); wait up to ``timeout``.

        ``give_up_on_failure``: return False as soon as an attempt made for this flush failed and
        no retry is worth waiting for, instead of waiting out ``timeout`` (at exit: do not hold
        the process up for a service that is down). A service that answered it is busy (429,
        502-504) is retried when it asked to be (``Retry-After``) or after the backoff, if that
        retry, taking as long as the failed attempt did, would be answered within ``timeout``:
        a loaded service that sheds a burst of closing runs gets their steps a moment later
        instead of leaving them in the unsent file, and no retry is begun that the deadline
        would cut short.

        Called from this thread itself (an ``on_alert`` callback that flushes) it cannot wait
        for itself: it only says whether everything is sent already.
        """
        if self.on_its_thread:
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
                if (give_up_on_failure and self.stats["failures"] > failures_before and not self._force
                        and not self._retry_answered_by < deadline):
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
        with self._cond:
            self._stop = True
            self._stop_send = send
            if self.on_its_thread:
                self._finish_on_thread = True
        self.wake.set()
        if self.on_its_thread:  # close() from a callback: no self-join; the thread finishes itself
            return
        self.join(timeout)

    @property
    def finishes_itself(self) -> bool:
        """Stopped from its own thread: it ends after one more cycle and keeps its leftovers
        itself (:meth:`join` waits for that)."""
        return self._finish_on_thread

    def join(self, timeout: float) -> None:
        """Wait at most ``timeout`` for the stopped thread to end, cutting short a request still
        under way near the end (see :meth:`stop`)."""
        end = time.monotonic() + timeout
        self._thread.join(max(0.0, timeout - min(ABORT_GRACE, timeout / 2)))
        if self._thread.is_alive() and self.transport.abort():
            self._thread.join(max(ABORT_GRACE, end - time.monotonic()))

    def finish(self) -> str | None:
        """After :meth:`stop`: close the transport and keep what it did not deliver. Returns a
        warning for the user, or None."""
        return self._finish(stuck=self.alive)

    def _finish(self, stuck: bool) -> str | None:
        message = self.transport.finish(self.spool, len(self.buffer), worker_stuck=stuck)
        self.spool.remove_directory_if_empty()
        return message

    def _finish_here(self) -> None:
        """:meth:`finish` at the end of the thread's last cycle, when it was stopped from this
        thread (which is not stuck, then); its warning goes to the user from here."""
        try:
            message = self._finish(stuck=False)
        except Exception as e:  # the disk refused the unsent file: say so rather than nothing
            message = f"losswatch: could not keep the unsent records at the end: {e!r}"
        if message:
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def forget_in_child(self) -> None:
        """In a forked child: the buffered records are the parent's to send, not the child's."""
        self.buffer = deque()

    @property
    def counts(self) -> dict[str, int]:
        """Failed attempts, outages, and the records held: buffered, spooled, spilled, dropped."""
        s = dict(self.stats)
        s.update(buffered=len(self.buffer), spooled=len(self.spool), spilled=self.spool.spilled,
                 dropped=self.spool.dropped)
        return s
