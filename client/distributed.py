"""Many processes, one run: which rank reports, and acting decided once for every rank.

In a ``torch.distributed`` job (DDP, FSDP) every rank runs the same loop. Left alone, each rank
would send the same steps and each rank's Actor would change its own LR at its own step, so the
replicas would drift apart. Here:

- **Who reports.** :func:`process_rank` says this process's global rank and the world size, read
  only when torch is already imported and a process group is initialised (the client never
  imports torch itself). By default (``Monitor(ranks="zero")``) only rank 0 sends; the other
  ranks' ``log()`` sends nothing, spools nothing and warns about nothing.
- **Who decides, who applies.** Rank 0's Actor decides, and hands each change it decides on to
  :meth:`DecisionSync.defer` instead of making it. Every ``every`` steps (the *sync steps*,
  ``step % every == 0``) rank 0 broadcasts what it decided since the last sync step, and every
  rank, rank 0 included, makes those changes at the *next* sync step, through the same
  ``Actor._do``. A change decided at step ``d`` thus takes effect at the same step on every rank,
  between ``every`` and ``2 * every`` steps after ``d``, and the replicas stay identical.

The protocol: at sync step ``s`` rank 0 broadcasts one message, a JSON list (empty most of the
time) of

    {"step": s + every, "action": <the action dict>}

in a zero-padded buffer of :data:`MESSAGE_BYTES` bytes, over a gloo group of its own (created
once, at the first sync step, on the CPU: never the job's NCCL group, so no GPU collective and
no host-device sync). The broadcast is asynchronous: issued at ``s``, waited for at ``s + every``,
just before its actions are applied, so a rank never waits for the others at a sync step unless
one of them is ``every`` steps behind. Every rank must build its Monitor with the same acting
settings and call ``log()`` at the same steps.

A rank left waiting (another rank stopped early or hangs) gives up after ``timeout`` seconds:
one warning, and acting is off on that rank from then on; training goes on, never deadlocked
by losswatch.
"""

from __future__ import annotations

import json
import logging
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("losswatch.distributed")

#: the values of ``Monitor(ranks=...)``
RANKS = ("zero", "all")

#: the size of one broadcast message: a few actions with their reasons (one is ~300 bytes; the
#: Actor's cooldown allows about one per sync step)
MESSAGE_BYTES = 8192


def process_rank() -> tuple[int, int]:
    """(global rank, world size) of this process; (0, 1) outside an initialised torch.distributed
    job, and whenever torch has not been imported (it is never imported here)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0, 1
    try:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank()), int(dist.get_world_size())
    except Exception:  # a half-imported or stubbed torch: not a distributed job we can join
        pass
    return 0, 1


def check_options(ranks: str, sync_every: int, sync_timeout: float) -> None:
    """A clear error for ``Monitor(ranks=, sync_every=, sync_timeout=)`` out of range, raised
    in every process (a single-process run too), not only in a job that would use them."""
    if ranks not in RANKS:
        raise ValueError(f"ranks must be one of {RANKS}, got {ranks!r}")
    if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
        raise ValueError(f"sync_every must be an int >= 1, got {sync_every!r}")
    if isinstance(sync_timeout, bool) or not isinstance(sync_timeout, (int, float)) or not sync_timeout > 0:
        raise ValueError(f"sync_timeout must be > 0 seconds, got {sync_timeout!r}")


def rank_run_id(run_id: str, rank: int) -> str:
    """The run id a rank sends under with ``ranks="all"``: rank 0 keeps the run's id, rank N
    adds ``.rankN``, so each rank's steps are a run of their own (the same step from two ranks
    would otherwise be one record and a duplicate)."""
    return run_id if rank == 0 else f"{run_id}.rank{rank}"


class DecisionSync:
    """Shares rank 0's acting decisions with every rank of the job (see the module docstring).

    Parameters
    ----------
    monitor : Monitor
        This rank's Monitor; its Actor makes the changes (``monitor.actor``).
    rank, world_size : int
        This process's global rank and the job's size.
    every : int
        Steps between two sync steps (default 10): a decision takes effect at most ``2 * every``
        steps after it is made.
    timeout : float
        Seconds a rank waits for the others at a sync step before it turns acting off.
    """

    def __init__(self, monitor: Any, rank: int, world_size: int, every: int = 10,
                 timeout: float = 60.0) -> None:
        check_options("all", every, timeout)
        self.monitor = monitor
        self.rank = rank
        self.world_size = world_size
        self.every = int(every)
        self.timeout = float(timeout)
        self.off = False  # set after a timeout: this rank no longer takes part
        self._group: Any = None
        self._outbox: list[dict[str, Any]] = []  # rank 0: decided since the last sync step
        self._in_flight: Any = None  # (work, buffer) of the broadcast issued at the last sync step
        self._buffer: Any = None
        self.applied: list[dict[str, Any]] = []  # what this rank applied: {"step", "action", "detail"}

    @property
    def decides(self) -> bool:
        """This rank's Actor decides (rank 0, still in touch with the others)."""
        return self.rank == 0 and not self.off

    def defer(self, step: int, act: dict[str, Any]) -> str:
        """Rank 0's Actor: record a change instead of making it (made at a later sync step on
        every rank). Returns the outcome's detail."""
        self._outbox.append(dict(act))
        return (f"decided on rank 0, shared at the next sync step and applied on all {self.world_size} ranks "
                f"at once at the one after (a sync step every {self.every} steps)")

    def at(self, step: int) -> None:
        """Called by ``Monitor.log`` on every rank with every step: on a sync step, apply what
        was broadcast at the previous one, then broadcast what was decided since."""
        if self.off or step % self.every:
            return
        try:
            due = self._receive()
            for entry in due:
                self._apply(step, entry["action"])
            self._send(step)
        except Exception as exc:  # a rank stopped early, a broken group: never hang training
            self.off = True
            self._in_flight = None
            log.warning("losswatch: rank %d of %d could not share acting decisions with the other ranks at step %d "
                        "(waited at most %gs: %s); acting is off on this rank from now on, training goes on "
                        "(acting needs a Monitor with the same settings on every rank, logging the same steps)",
                        self.rank, self.world_size, step, self.timeout, exc)

    def _receive(self) -> list[dict[str, Any]]:
        """The entries of the broadcast issued at the previous sync step (waited for now)."""
        if self._in_flight is None:
            return []
        work, buf = self._in_flight
        self._in_flight = None
        work.wait()
        return decode(bytes(buf.numpy()))

    def _send(self, step: int) -> None:
        import datetime

        import torch
        import torch.distributed as dist

        if self._group is None:
            # WHY a group of its own on gloo: the job's default group is often NCCL (a collective
            # on it is a GPU kernel and a host-device sync); this one moves a few bytes on the CPU
            self._group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=self.timeout))
            # one buffer for every message: the previous broadcast was waited for (_receive)
            self._buffer = torch.zeros(MESSAGE_BYTES, dtype=torch.uint8)
        buf = self._buffer
        if self.rank == 0:  # the others' buffer is overwritten whole by the broadcast
            buf.zero_()
            data, self._outbox = encode([{"step": step + self.every, "action": a} for a in self._outbox])
            if data:
                buf[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        self._in_flight = (dist.broadcast(buf, src=0, group=self._group, async_op=True), buf)

    def _apply(self, step: int, act: dict[str, Any]) -> None:
        actor = self.monitor.actor
        if actor is None:
            return
        try:
            detail = actor._do(step, act)
        except Exception as exc:  # acting must never crash training
            log.warning("losswatch: rank %d could not apply %s at step %d: %r", self.rank, act.get("type"),
                        step, exc)
            return
        self.applied.append({"step": step, "action": act, "detail": detail})
        log.info("losswatch: rank %d applied %s at step %d: %s", self.rank, act.get("type"), step, detail)


def encode(entries: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
    """The message for ``entries`` (at most :data:`MESSAGE_BYTES`) and the actions that did not
    fit, left for the next sync step. An action too large on its own goes without its
    ``reason`` (words for people), or, still too large, is dropped with a warning."""
    sent: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        if len(_dumps(sent + [entry])) <= MESSAGE_BYTES:
            sent.append(entry)
            continue
        if sent:  # the rest goes with the next sync step
            return _dumps(sent), [e["action"] for e in entries[i:]]
        short = dict(entry, action={k: v for k, v in entry["action"].items() if k != "reason"})
        if len(_dumps([short])) <= MESSAGE_BYTES:
            sent.append(short)
        else:
            log.warning("losswatch: the action %s is too large to share with the other ranks; not applied",
                        entry["action"].get("type"))
    return (_dumps(sent) if sent else b""), []


def _dumps(entries: list[dict[str, Any]]) -> bytes:
    # a value JSON does not know (a numpy float from the in-process detectors) as a float, or text
    return json.dumps(entries, default=_plain).encode()


def _plain(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def decode(data: bytes) -> list[dict[str, Any]]:
    """The entries of one message (an empty buffer: none)."""
    text = data.rstrip(b"\0")
    return json.loads(text) if text else []
