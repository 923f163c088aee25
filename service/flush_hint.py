"""The flush hint: under load, the service asks clients to send less often.

A run that logs a step a second with the client's default flush interval (0.5 s) sends one POST
a second: a fleet of runs costs one request per run per second whatever the batch holds, and the
per-request cost dominates (bench/results/ingest-breakdown.md). When the POSTs pile up in one
service process, its answers carry ``X-Losswatch-Flush-Interval: SECONDS``; the client waits that
long between sends (never less than its own interval, never more than 30 s), so the same steps
arrive in fewer, larger batches. Nothing is dropped: a hint changes when steps are sent, not what.

The load is the number of POST /steps already being handled in this process when one arrives,
averaged over the requests of one second: a burst after a short stall hardly moves it, a queue
that keeps growing does. (With requests arriving at random, that average is rho / (1 - rho) for a
process busy a fraction rho of the time: 1 at half busy, 2 at two thirds, 4 at four fifths.)
Once a second (at the first request of the next second):

* if that average reached ``threshold``, the hint doubles (1 s the first time), up to
  ``maximum``, but at most once per hint's length: clients learn a new hint at their next
  answer, so the hint waits for them before going higher;
* if it stayed at or below half the threshold, the hint shrinks by a tenth (and by a tenth more
  for each whole second without any request), and is dropped below
  the client's default interval: clients come back to their own interval gradually, not all at
  once into the load that caused the hint;
* in between it holds.
"""

from __future__ import annotations

import time

from ..client.flush import DEFAULT_INTERVAL, HINT_HEADER

#: the response header that carries the hint
HEADER = HINT_HEADER

FIRST_HINT = 1.0    # seconds: a run at one step a second sends no less often below this
DROP_BELOW = DEFAULT_INTERVAL  # a hint no longer than the client's default says nothing
DECAY = 0.9         # per quiet second
WINDOW = 1.0        # seconds between changes of the hint


class FlushHint:
    """Tracks POST /steps in flight in this process and the hint their answers carry.

    ``threshold`` 0 turns the hint off. The event loop is single-threaded, so plain counters do.
    """

    def __init__(self, threshold: int, maximum: float) -> None:
        self.threshold = threshold
        self.maximum = float(maximum)
        self.in_flight = 0
        self.seconds = 0.0              # the current hint; 0: none
        self._seen = 0                  # sum over this window's requests of the others each found
        self._requests = 0              # requests in this window
        self._window_end = float("-inf")
        self._raised_at = float("-inf")

    def enter(self, now: float | None = None) -> None:
        """A POST /steps starts (the hint moves here, once per window)."""
        self.in_flight += 1
        if not self.threshold:
            return
        now = time.monotonic() if now is None else now
        if now >= self._window_end:
            self._step(now)
            self._window_end = now + WINDOW
        self._seen += self.in_flight - 1
        self._requests += 1

    def leave(self) -> None:
        self.in_flight -= 1

    def _step(self, now: float) -> None:
        # whole windows that passed without a request since the last one closed were quiet: a
        # fleet that went quiet must not keep its hint until it is busy again, and the load of a
        # window that long ago says nothing about now
        quiet = int((now - self._window_end) // WINDOW) if self._window_end > float("-inf") else 0
        load = self._seen / self._requests if self._requests and not quiet else 0.0
        self._seen = self._requests = 0
        if quiet:
            self.seconds *= DECAY ** quiet
        if load >= self.threshold:
            if now - self._raised_at >= self.seconds:
                self.seconds = min(self.maximum, max(FIRST_HINT, 2 * self.seconds))
                self._raised_at = now
        elif load <= self.threshold / 2:
            self.seconds *= DECAY
            if self.seconds < DROP_BELOW:
                self.seconds = 0.0

    def headers(self) -> dict[str, str] | None:
        """The answer's hint header, or None when there is no hint."""
        return {HEADER: f"{self.seconds:.3g}"} if self.seconds else None
