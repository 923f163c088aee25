"""A run's attempts: the detector states kept at its checkpoints, the rewinds its client made, and
where in the stream of records a new attempt begins.

A client that rolls back (docs/acting.md) tells the service in the run metadata: ``checkpoints``
(the last 8, ``{"step", "path"}``: the state from which step ``step`` runs) and ``rewinds`` (the
last 8, ``{"to_step", "at_step"}``: at ``at_step`` the run went back to the checkpoint of
``to_step``). Then it logs steps it logged before. The service keeps those steps as a new
*attempt* of the run (docs/storage.md, "Attempts") and runs the detectors on them from the state
they had at that checkpoint, as the in-process detectors do (``client/local.py``).

The client sends a cycle's metadata before that cycle's records (``HttpTransport.send`` in ``client/http.py``), so:

* a checkpoint at step ``c`` usually reaches the service before the records of the steps before
  ``c``: its detector state is kept when the records reach ``c`` (before the record of ``c`` is
  fed: :meth:`Timeline.due_before`). One named after the service stored a step at or past ``c``
  keeps the state as it is when the metadata arrives (the nearest one the service can have).
* a rewind usually arrives before the last records of the attempt it ends (up to ``at_step``).
  It stays *pending* until the first record that goes back (a step at or below the highest one
  of the current attempt, at or above ``to_step``) and was logged after the records stored (its
  ``ts`` is later than theirs): that record begins the new attempt. The ``ts`` tells a re-logged
  step from a batch the client sends again because an answer was lost (same records, same
  ``ts``: duplicates, as ever). A record without ``ts`` that goes back begins the attempt. A
  record past ``at_step`` that comes first means the run did not go back: the rewind is dropped
  (so a pending rewind lasts a cycle or two of the client, not the rest of the run).

All of it is one small value per run, :class:`Timeline`, kept by the store as opaque bytes in the
run's snapshot (:mod:`.stores.base`) and committed with the steps whenever it changes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

#: detector states kept per run (the client's ``Monitor`` keeps as many checkpoints)
KEEP_STATES = 8
#: attempts a run may have; a rewind past this many begins none (its steps count as duplicates,
#: as before attempts existed) and the service logs a warning. Every attempt's keys are kept alive
#: with the run, so the work of a write grows with this number: keep it small.
MAX_ATTEMPTS = 64

_MAGIC = b"LWT1"
_LEN = struct.Struct("<I")


@dataclass(slots=True)
class Timeline:
    """Where a run is in its attempts (module docstring).

    ``attempts`` lists the attempts after the first, oldest first: ``{"attempt": n, "start":
    to_step, "rewound_at": at_step}`` (the first attempt starts at the run's first step).
    """

    attempts: list[dict[str, int]] = field(default_factory=list)
    states: dict[int, bytes] = field(default_factory=dict)   # checkpoint step -> Engine.to_bytes()
    due: list[int] = field(default_factory=list)             # checkpoint steps not reached yet, sorted
    rewinds: list[dict[str, int]] = field(default_factory=list)   # the metadata's rewinds, as last seen
    pending: dict[str, Any] | None = None    # a rewind not begun: to_step, at_step, ts (latest stored ts)

    @property
    def attempt(self) -> int:
        """The current attempt (1: the run was never rewound)."""
        return 1 + len(self.attempts)

    def copy(self) -> "Timeline":
        return Timeline([dict(a) for a in self.attempts], dict(self.states), list(self.due),
                        [dict(r) for r in self.rewinds], dict(self.pending) if self.pending else None)

    # --- metadata ---------------------------------------------------------------------------
    def new_checkpoints(self, meta: dict[str, Any]) -> list[int]:
        """Checkpoint steps the metadata names that this timeline neither keeps nor waits for."""
        steps = [c["step"] for c in _entries(meta.get("checkpoints"), ("step",))]
        return sorted({s for s in steps if s not in self.states and s not in self.due})

    def wait_for(self, step: int) -> None:
        self.due = sorted({*self.due, step})[-KEEP_STATES:]

    def keep(self, step: int, state: bytes) -> None:
        self.states[step] = state
        self.due = [s for s in self.due if s != step]
        while len(self.states) > KEEP_STATES:
            del self.states[min(self.states)]

    def new_rewinds(self, meta: dict[str, Any]) -> list[dict[str, int]]:
        """The rewinds of the metadata not seen before, and remember them as seen.

        The client sends its last 8 rewinds, oldest first: the new ones are what follows the
        longest end of the list seen before that starts the new list (a metadata sent again, for
        a checkpoint or a retry, brings none)."""
        now = [{"to_step": r["to_step"], "at_step": r["at_step"]}
               for r in _entries(meta.get("rewinds"), ("to_step", "at_step"))]
        if "rewinds" not in meta:
            return []
        old = self.rewinds
        overlap = next((k for k in range(min(len(old), len(now)), 0, -1) if old[-k:] == now[:k]), 0)
        self.rewinds = now
        return now[overlap:]

    # --- records ----------------------------------------------------------------------------
    def due_before(self, high: int) -> list[int]:
        """Checkpoint steps at or below ``high`` still waiting for their state."""
        return [s for s in self.due if s <= high]

    def relog_at(self, steps: Sequence[int], ts: Sequence[float | None], lo: int,
                 last_step: int | None) -> int | None:
        """With a rewind pending, the position (>= ``lo``) of the first re-logged record: one that
        goes back (its step is at or below the highest before it, stored or earlier in the
        batch), not below the rewind's ``to_step``, and logged after the stored records (``ts``
        later than the pending rewind's, or no ``ts`` on either side). None: none in the batch."""
        p = self.pending
        if p is None:
            return None
        high = -1 if last_step is None else last_step
        seen_ts = p.get("ts")
        for i in range(lo, len(steps)):
            s = steps[i]
            if s <= high and s >= p["to_step"]:
                t = ts[i]
                if t is None or seen_ts is None or t > seen_ts:
                    return i
            elif s > high:
                high = s
        return None

    def went_on(self, high: int) -> bool:
        """With a rewind pending, the records reached ``high`` past its ``at_step`` without going
        back: the run did not rewind after all (the rollback's own step is the last one before
        the re-logged ones), and the rewind begins nothing. True if it was dropped."""
        if self.pending is None or high <= self.pending["at_step"]:
            return False
        self.pending = None
        return True

    def saw_ts(self, ts: Iterable[float | None]) -> bool:
        """While a rewind is pending, the latest ``ts`` of the records stored; True if it moved.
        (An iterable: read only while a rewind is pending, so a batch's timestamps are not
        gathered for nothing.)"""
        p = self.pending
        if p is None:
            return False
        latest = max((t for t in ts if t is not None), default=None)
        if latest is None or (p.get("ts") is not None and latest <= p["ts"]):
            return False
        p["ts"] = latest
        return True

    def begin(self, to_step: int, at_step: int, meta: dict[str, Any]) -> bytes | None:
        """Start the next attempt at ``to_step``: the state kept at the latest checkpoint at or
        before it (None: none kept). The states after it are dropped (a future that was
        discarded); the checkpoints ``meta`` still names after it are waited for again, in the
        new attempt (a loop that saves every N steps saves them again)."""
        self.attempts.append({"attempt": self.attempt + 1, "start": to_step, "rewound_at": at_step})
        self.pending = None
        kept = [s for s in self.states if s <= to_step]
        state = self.states[max(kept)] if kept else None
        self.states = {s: b for s, b in self.states.items() if s <= to_step}
        for c in _entries(meta.get("checkpoints"), ("step",)):
            if c["step"] > to_step:
                self.wait_for(c["step"])
        return state

    def summary(self) -> list[dict[str, int | None]]:
        """Every attempt with its start, as the run summary shows them (the first starts at the
        run's first step: ``start`` None)."""
        return [{"attempt": 1, "start": None, "rewound_at": None}, *(dict(a) for a in self.attempts)]

    # --- bytes --------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        steps = sorted(self.states)
        head = json.dumps({"attempts": self.attempts, "due": self.due, "rewinds": self.rewinds,
                           "pending": self.pending, "states": [[s, len(self.states[s])] for s in steps]},
                          separators=(",", ":")).encode()
        return b"".join([_MAGIC, _LEN.pack(len(head)), head, *(self.states[s] for s in steps)])

    @classmethod
    def from_bytes(cls, b: bytes | None) -> "Timeline":
        if not b:
            return cls()
        if b[:4] != _MAGIC:
            raise ValueError("not a run timeline")
        (n,) = _LEN.unpack_from(b, 4)
        off = 8 + n
        doc = json.loads(b[8:off])
        states: dict[int, bytes] = {}
        for s, size in doc["states"]:
            states[s] = b[off:off + size]
            off += size
        return cls(doc["attempts"], states, doc["due"], doc["rewinds"], doc["pending"])


def _entries(value: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The last ``KEEP_STATES`` entries of a metadata list whose ``keys`` are integers >= 0 (the
    API validates them; metadata written otherwise may hold anything: skipped)."""
    if not isinstance(value, list):
        return []
    out = [e for e in value if isinstance(e, dict)
           and all(type(e.get(k)) is int and e[k] >= 0 for k in keys)]
    return out[-KEEP_STATES:]


def timeline_spans(attempts: Sequence[dict[str, Any]], start: int | None,
                   end: int | None) -> list[tuple[int, int | None, int | None]]:
    """Which attempt holds which steps of the run's current timeline: each earlier attempt up to
    where a later one went back to, then the latest one; ``(attempt, first, last)`` within
    [start, end] (None = open), in step order, empty spans left out.

    Examples
    --------
    >>> timeline_spans([{"attempt": 1, "start": None}, {"attempt": 2, "start": 100}], None, None)
    [(1, None, 99), (2, 100, None)]
    >>> timeline_spans([{"attempt": 1, "start": None}, {"attempt": 2, "start": 100},
    ...                 {"attempt": 3, "start": 50}], 0, 500)
    [(1, 0, 49), (3, 50, 500)]
    """
    out: list[tuple[int, int | None, int | None]] = []
    cap = end                                   # steps above a later attempt's start are not this one's
    for a in reversed(attempts):
        lo = a.get("start")
        first = start if lo is None else (lo if start is None else max(lo, start))
        last = cap
        if last is None or last >= (0 if first is None else first):     # steps are >= 0
            out.append((a["attempt"], first, last))
        if lo is not None:
            cap = lo - 1 if cap is None else min(cap, lo - 1)
        if cap is not None and start is not None and cap < start:
            break
    return out[::-1]
