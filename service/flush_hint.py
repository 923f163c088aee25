"""The flush hint: under load, the service asks clients to send less often.

A run that logs a step a second with the client's default flush interval (0.5 s) sends one POST
a second: a fleet of runs costs one request per run per second whatever the batch holds, and the
per-request cost dominates (bench/results/ingest-breakdown.md). When a run's requests (its POST
/steps, its metadata PUT, its action reports) pile up in one service process, the answers to all
of them carry ``X-Losswatch-Flush-Interval: SECONDS``; the client waits that long between sends
(never less than its own interval, never more than 30 s), so the same steps arrive in fewer,
larger batches. Nothing is dropped: a hint changes when steps are sent, not what. A run's first
answer is its metadata PUT's, so a run that starts into a loaded process follows the hint from
its first batch on.

The load is the number of those requests already being handled in this process when one
arrives, averaged over the requests of one window: a burst after a short stall hardly moves it,
a queue that keeps growing does. (With requests arriving at random, that average is
rho / (1 - rho) for a process busy a fraction rho of the time: 1 at half busy, 2 at two thirds, 4
at four fifths.) A window lasts a second, or ends as soon as ``EVIDENCE`` requests of it found the
process loaded on average while the hint may rise: a fleet that starts (or returns) all at once
is answered within its first requests rather than a second later. When a window ends (at the
first request after it):

* if that average reached ``threshold``, the hint rises, at most once per hint's length (clients
  learn a new hint at their next answer, so the hint waits for them before going higher), to
  what the window's requests ask for: they arrived ``demand`` times as fast as the process
  answered them while busy (``demand`` is its busy fraction, above 1 when a queue grows), so
  the clients, which sent at least every ``max(DROP_BELOW, hint)`` seconds, are asked for that
  interval times ``demand / busy_target``, where ``busy_target`` is the busy fraction the
  threshold stands for (``threshold / (1 + threshold)``: a half for 1). At least 1 s, up to
  ``maximum``; twice the hint when the rate says no more (a queue of slow requests, not of many);
* if it stayed at or below half the threshold, the hint shrinks by a tenth (and by a tenth more
  for each whole second without any request), and is dropped below
  the client's default interval: clients come back to their own interval gradually, not all at
  once into the load that caused the hint;
* in between it holds.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from ..client.flush import DEFAULT_INTERVAL, HINT_HEADER

#: the response header that carries the hint, and its description in the API's spec
HEADER = HINT_HEADER
HEADER_DOC = {"description": "Present while this service is loaded: send no more often than this many "
                             "seconds (docs/service-api.md, the flush hint)",
              "schema": {"type": "number", "exclusiveMinimum": 0}}

FIRST_HINT = 1.0    # seconds: a run at one step a second sends no less often below this
DROP_BELOW = DEFAULT_INTERVAL  # a hint no longer than the client's default says nothing
DECAY = 0.9         # per quiet second
WINDOW = 1.0        # seconds between changes of the hint, at most
EVIDENCE = 32       # requests of a window that may end it early when they found the process loaded


class FlushHint:
    """Tracks the runs' requests in flight in this process and the hint their answers carry.

    ``threshold`` 0 turns the hint off. The event loop is single-threaded, so plain counters do.
    ``enter`` and ``leave`` take the time for tests (an explicit clock); the service passes none.
    """

    def __init__(self, threshold: int, maximum: float) -> None:
        self.threshold = threshold
        self.maximum = float(maximum)
        self.in_flight = 0
        self.seconds = 0.0              # the current hint; 0: none
        self._seen = 0                  # sum over this window's requests of the others each found
        self._requests = 0              # requests in this window
        self._done = 0                  # requests answered in this window
        self._busy = 0.0                # seconds of this window with a request in flight
        self._busy_since = 0.0          # when the current busy stretch (or its part in this window) began
        self._window_start = float("-inf")
        self._window_end = float("-inf")
        self._raised_at = float("-inf")

    def enter(self, now: float | None = None) -> None:
        """A run's request starts (the hint moves here, once per window)."""
        if not self.threshold:
            self.in_flight += 1
            return
        now = time.monotonic() if now is None else now
        if now >= self._window_end or (
                self._requests >= EVIDENCE and self._seen >= self.threshold * self._requests
                and now - self._raised_at >= self.seconds):
            self._step(now)
            self._window_start, self._window_end = now, now + WINDOW
        if not self.in_flight:
            self._busy_since = now
        self._seen += self.in_flight
        self._requests += 1
        self.in_flight += 1

    def leave(self, now: float | None = None) -> None:
        """That request is answered."""
        self.in_flight -= 1
        if not self.threshold:
            return
        self._done += 1
        if not self.in_flight:
            now = time.monotonic() if now is None else now
            self._busy += max(0.0, now - self._busy_since)

    @contextmanager
    def request(self) -> Iterator[FlushHint]:
        """``with hint.request():`` around a run's request other than POST /steps (which counts
        itself on its own fast path)."""
        self.enter()
        try:
            yield self
        finally:
            self.leave()

    def _demand(self, now: float) -> float | None:
        """The window's arrival rate over the rate it answered at while busy (None: unknown)."""
        busy = self._busy + (now - self._busy_since if self.in_flight else 0.0)
        length = now - self._window_start
        if not (self._done and busy > 0 and length > 0):
            return None
        return (self._requests / length) / (self._done / busy)

    def _step(self, now: float) -> None:
        # whole windows that passed without a request since the last one closed were quiet: a
        # fleet that went quiet must not keep its hint until it is busy again, and the load of a
        # window that long ago says nothing about now
        # (none for a window that ends early)
        quiet = max(0, int((now - self._window_end) // WINDOW)) if self._window_end > float("-inf") else 0
        load = self._seen / self._requests if self._requests and not quiet else 0.0
        demand = self._demand(now) if not quiet else None
        self._seen = self._requests = self._done = 0
        self._busy = 0.0
        self._busy_since = now
        if quiet:
            self.seconds *= DECAY ** quiet
        if load >= self.threshold:
            if now - self._raised_at >= self.seconds:
                busy_target = self.threshold / (1.0 + self.threshold)
                asked = (max(DROP_BELOW, self.seconds) * demand / busy_target) if demand else 0.0
                if asked <= self.seconds:
                    asked = 2 * self.seconds
                self.seconds = min(self.maximum, max(FIRST_HINT, asked))
                self._raised_at = now
        elif load <= self.threshold / 2:
            self.seconds *= DECAY
            if self.seconds < DROP_BELOW:
                self.seconds = 0.0

    def headers(self) -> dict[str, str] | None:
        """The answer's hint header, or None when there is no hint."""
        return {HEADER: f"{self.seconds:.3g}"} if self.seconds else None
