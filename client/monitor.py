"""``Monitor``: the object a training loop holds. ``log()`` is the only thing on the hot path.

What ``log()`` does, and nothing more: detach tensors (no copy, no sync), check Python floats for
NaN/inf (a subtraction), append one tuple to the worker's buffer (a deque: thread-safe under the
GIL, no lock), wake the worker when a batch is full, and look at one attribute for pending advice.
Everything else happens in the parts the Monitor wires together (docs/client.md, "How the
client is built"):

- the run's :class:`~.transport.Transport` (:mod:`.transport`, :mod:`.http`): where records go
  and where verdicts come from: the service, the in-process detectors, or nowhere;
- the :class:`~.worker.Worker` (:mod:`.worker`): the background thread that reads, spools,
  sends and retries;
- the :class:`~.verdicts.Verdicts` (:mod:`.verdicts`): alerts, health, advice, and the events
  told to ``on_alert``;
- the :class:`~.actor_hook.ActorHook` (:mod:`.actor_hook`): the run's one Actor and the advice
  waiting for it.

Fork policy (``in_child``): a forked child (a DataLoader worker, a multiprocessing pool) does not
inherit the parent's thread, and must not re-send the parent's buffered records. By default
(``"disable"``) ``log()`` in a child does nothing: the parent is the one that reports the run, and
DataLoader workers never duplicate records. ``in_child="fresh"`` gives a child its own empty buffer,
spool and worker on its first ``log()`` (for a child that owns steps of its own).
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import warnings
import weakref

from losswatch.detectors.objective import objective_of

from .actor_hook import ActorHook
from .flush import DEFAULT_INTERVAL
from .values import hold, resolve
from .verdicts import Verdicts

# Import cost matters (a training script imports this first thing): http.client, json, tempfile
# and the transport, worker and spool modules are imported when a Monitor is built, not here.
# typing costs ~3 ms to import; annotations are strings (PEP 563), so only checkers need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = ["Monitor"]

_time = time.time
_live: "weakref.WeakSet[Monitor]" = weakref.WeakSet()

#: of close()'s deadline, what the flush leaves for stopping the worker (its last cycle, cutting
#: short a request a frozen service never answers): at most this, half of a shorter deadline
EXIT_RESERVE = 0.5

_RUN_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def _default_spool_dir(run_id: str) -> str:
    import tempfile

    safe = "".join(c if c in _RUN_ID_CHARS and c != ":" else "_" for c in run_id)[:100] or "run"
    return os.path.join(tempfile.gettempdir(), "losswatch-spool", f"{safe}-{os.getpid()}")


class Monitor:
    """Stream one training run's per-step signals to a losswatch service (or watch them locally).

    Parameters
    ----------
    run_id : str, optional
        The run's name; records are keyed by (run_id, step). Default: ``run-<time>-<pid>``.
    url : str, optional
        The service, e.g. ``http://127.0.0.1:8000``; default ``$LOSSWATCH_URL``. With no URL the
        detectors run in this process (in the background thread) when numpy is importable, and
        only the NaN check otherwise.
    project : str, optional
        Groups runs in the service and on the dashboards.
    meta : dict, optional
        Run metadata (hyper-parameters, ``lr_schedule``...), sent once with PUT /v1/runs/<id>.
    token : str, optional
        Bearer token; default ``$LOSSWATCH_TOKEN``.
    on_alert : callable, optional
        ``on_alert(alert_dict)`` for every alert raised, escalated or resolved (the service's and
        the local NaN check's); the dict's ``event`` field says which (``"raised"``,
        ``"escalated"``: a higher severity or new advice, ``"resolved"``). Runs in the background
        thread; an exception in it is caught and warned about once. Each event is also logged on
        the ``losswatch`` logger (visible by default: docs/integrations.md), as is the run's start
        line.
    flush_interval : float
        Seconds between sends at most (0.5: an alert is visible well under a second after the
        step; a batch of 1-500 records every half second is nothing for the service). The
        attribute of that name may be changed during the run; it applies from the next cycle.
    batch_size : int
        Records per POST; a full batch is sent at once, without waiting for the interval.
    spool_dir : str, optional
        Where records that cannot be sent spill when ``max_memory_records`` is passed
        (default ``<tmp>/losswatch-spool/<run_id>-<pid>``).
    max_memory_records, max_spool_bytes : int
        Bounds on the unsent records in memory and on disk.
    timeout : float
        Seconds per HTTP attempt (paid by the background thread only).
    max_backoff : float
        Longest wait between retries while the service is down.
    exit_timeout : float
        At interpreter exit (and in ``close()``), how long to try to send what is left.
    in_child : {"disable", "fresh"}
        What a forked child does with this monitor (see the module docstring).
    act, act_dry_run : bool
        Apply (or only report, when dry-run) the service's recommendations in the training
        thread through ``losswatch.client.acting.Actor``, built on first need. The run has one
        Actor: integrations asked to act attach to it (:meth:`attach_actor`).
    optimizer, scheduler, on_rollback, on_stop
        What the Actor changes and calls.
    actor_options : dict, optional
        Further Actor arguments (``cooldown_steps``, ``max_actions``, ``min_persist_steps``...),
        spelled as every integration spells them. ``act_cooldown_steps`` and ``act_max`` are
        the former spelling (deprecated).
    ranks : {"zero", "all"}
        In a ``torch.distributed`` job (initialised before the Monitor is built): ``"zero"``
        (default) sends from global rank 0 only, the other ranks' ``log()`` does nothing but take
        part in acting; ``"all"`` sends every rank, rank N as run ``<run_id>.rankN`` (metadata
        ``rank``, ``world_size``). See :mod:`losswatch.client.distributed`.
    sync_every, sync_timeout
        In such a job with acting on: rank 0's decisions are shared every ``sync_every`` steps
        (default 10) and made on every rank at the next sync step; a rank that waits longer than
        ``sync_timeout`` seconds (default 60) for the others turns acting off, with one warning.

    Attributes
    ----------
    alerts : list of dict
        One entry per alert id, latest version (``Alert.to_dict()`` shape).
    recommendation : dict or None
        The current advice (``Action.to_dict()`` shape), None when healthy.
    health : str
        "ok", "warning" or "critical".
    actions : list of dict
        Actions reported with :meth:`report_action`.
    """

    def __init__(self, run_id: str | None = None, url: str | None = None, project: str | None = None,
                 meta: dict[str, Any] | None = None, token: str | None = None,
                 on_alert: Callable[[dict], Any] | None = None, *, flush_interval: float = DEFAULT_INTERVAL,
                 batch_size: int = 500, spool_dir: str | None = None,
                 max_memory_records: int = 100_000, max_spool_bytes: int = 1 << 30,
                 timeout: float = 5.0, max_backoff: float = 10.0, exit_timeout: float = 5.0,
                 in_child: str = "disable",
                 act: bool = False, optimizer: Any = None, scheduler: Any = None,
                 on_rollback: Callable | None = None, on_stop: Callable | None = None,
                 act_dry_run: bool = False, actor_options: dict[str, Any] | None = None,
                 act_cooldown_steps: int | None = None, act_max: int | None = None,
                 ranks: str = "zero", sync_every: int = 10, sync_timeout: float = 60.0) -> None:
        if in_child not in ("disable", "fresh"):
            raise ValueError(f"in_child must be 'disable' or 'fresh', got {in_child!r}")
        from .distributed import check_options, process_rank, rank_run_id

        check_options(ranks, sync_every, sync_timeout)
        self.rank, self.world_size = process_rank()
        # a rank other than 0 of a distributed job, with ranks="zero": rank 0 reports the run
        self._reports = self.rank == 0 or ranks != "zero"
        self.run_id = str(run_id) if run_id is not None else f"run-{int(time.time())}-{os.getpid()}"
        if ranks == "all" and self.world_size > 1:
            self.run_id = rank_run_id(self.run_id, self.rank)
        self.url = url if url is not None else (os.environ.get("LOSSWATCH_URL") or None)
        if self.url and not (0 < len(self.run_id) <= 128 and _RUN_ID_CHARS.issuperset(self.run_id)):
            # checked here, once, rather than having every POST rejected later
            raise ValueError(f"run_id must be 1-128 characters of [A-Za-z0-9._:-], got {self.run_id!r}")
        self.project = project
        self.meta = dict(meta) if meta else {}
        objective_of(self.meta)  # an unknown objective: a ValueError here, not a 422 on every PUT
        if self.world_size > 1:
            self.meta.setdefault("world_size", self.world_size)
            if ranks == "all":
                self.meta.setdefault("rank", self.rank)
        self.token = token if token is not None else (os.environ.get("LOSSWATCH_TOKEN") or None)
        self.batch_size = int(batch_size)
        self._spool_dir_given = spool_dir is not None
        self.spool_dir = spool_dir or _default_spool_dir(self.run_id)
        self.max_memory_records = max_memory_records
        self.max_spool_bytes = max_spool_bytes
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.exit_timeout = exit_timeout
        self.in_child = in_child
        self.actions: list[dict[str, Any]] = []
        self._warned: set[str] = set()
        self._closed = False

        self._verdicts = Verdicts(self.run_id, on_alert)
        actor_options = dict(actor_options or {})
        for old, new, v in (("act_cooldown_steps", "cooldown_steps", act_cooldown_steps),
                            ("act_max", "max_actions", act_max)):
            if v is not None:  # the former spelling, kept working for a while
                warnings.warn(f"Monitor({old}=...) is deprecated: use actor_options={{{new!r}: ...}}, "
                              f"the spelling every integration uses", DeprecationWarning, stacklevel=2)
                actor_options.setdefault(new, v)
        self._actor_hook = ActorHook(
            self, self._verdicts, dict(optimizer=optimizer, scheduler=scheduler, on_rollback=on_rollback,
                                       on_stop=on_stop, dry_run=bool(act_dry_run) and not act, **actor_options),
            bool(act or act_dry_run), rank=self.rank, world_size=self.world_size, sync_every=sync_every,
            sync_timeout=sync_timeout, warn_once=self._warn_once)

        from .transport import make_transport

        self._transport = make_transport(
            self.url, run_id=self.run_id, project=self.project, meta=self.meta, token=self.token,
            timeout=self.timeout, batch_size=self.batch_size, reports=self._reports,
            on_verdict=self._verdicts.apply)
        # What log() does instead of recording, None while it records. WHY one attribute rather
        # than a flag per case: log() pays one check for all of them (a rank that leaves
        # reporting to rank 0, after close(), in a forked child), and the case's own method says
        # what happens there.
        self._log_instead: Callable[..., None] | None = None if self._reports else self._on_silent_rank
        self._start(flush_interval)
        _live.add(self)
        if not self._reports:
            return
        from .announce import run_started  # the logging module is imported here, not at import

        run_started(self.run_id, self.url, self._transport.judges, self.project)

    # ------------------------------------------------------------------ setup
    def _start(self, flush_interval: float) -> None:
        """A fresh worker, buffer and spool (at construction, and in a 'fresh' fork child)."""
        from .spool import Spool
        from .worker import Worker

        self._worker = Worker(
            self._transport, read=self._read, after_cycle=self._verdicts.tell,
            spool=Spool(self.spool_dir, self.max_memory_records, self.max_spool_bytes),
            flush_interval=flush_interval, max_backoff=self.max_backoff)
        # log() appends to the worker's buffer and sets its event through these two bindings:
        # each saves an attribute lookup on the hot path
        self._buffer = self._worker.buffer
        self._wake = self._worker.wake
        self._transport.open_run(self.meta)  # sent with the first cycle, before any record

    # ------------------------------------------------------------------ hot path
    def log(self, step: int, loss: Any = None, grad_norm: Any = None, lr: Any = None,
            val_loss: Any = None, **extra: Any) -> None:
        """Record one step. Never blocks, never raises; costs about a microsecond.

        Values may be Python/numpy numbers or torch tensors (read later, in the background, in
        one batch: no host-device sync here). A non-finite float loss or grad-norm raises the NaN
        alert right here; a tensor one is caught when the batch is read, off the hot path.
        """
        try:
            if self._log_instead is not None:
                self._log_instead(step, loss, grad_norm, lr, val_loss, extra)
                return
            if loss.__class__ is float:
                if loss - loss != 0.0:  # NaN or +-inf, without a function call
                    self._nan_now(step, loss, grad_norm)
            elif loss is not None:
                loss = hold(loss)
            if grad_norm.__class__ is float:
                if grad_norm - grad_norm != 0.0:
                    self._nan_now(step, loss, grad_norm)
            elif grad_norm is not None:
                grad_norm = hold(grad_norm)
            if lr is not None and lr.__class__ is not float:
                lr = hold(lr)
            if val_loss is not None and val_loss.__class__ is not float:
                val_loss = hold(val_loss)
            hook = self._actor_hook
            if hook.pending is not None:
                # after the NaN check: a NaN in this very step is acted on before the optimizer
                # steps (the NaN ladder skips this batch)
                hook.at(step)
            if hook.sync is not None:  # after this step's decision: shared at this sync step
                hook.sync.at(step)
            if extra:
                for k, v in extra.items():
                    if v.__class__ is not float:
                        extra[k] = hold(v)
            else:
                extra = None  # type: ignore[assignment]
            q = self._buffer
            q.append((step, loss, grad_norm, lr, val_loss, _time(), extra))
            if len(q) >= self.batch_size:
                self._wake.set()
        except Exception as e:  # monitoring must never break training
            self._warn_once("log", f"losswatch: Monitor.log failed and skipped a step: {e!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.log(*args, **kwargs)

    def _nan_now(self, step: int, loss: Any, grad_norm: Any) -> None:
        if loss.__class__ is float and loss - loss != 0.0:
            self._actor_hook.nonfinite_loss(step)
        if self._verdicts.nan_in_log(step, loss, grad_norm, alone=not self._transport.judges):
            self._wake.set()  # run the on_alert callback promptly (in the worker's thread)

    # ------------------------------------------------------------------ what log() does instead
    def _on_silent_rank(self, step: int, *values: Any) -> None:
        """Rank 0 reports the run; this rank only makes the decisions shared with it."""
        sync = self._actor_hook.sync
        if sync is not None:
            sync.at(step)

    def _after_close(self, *args: Any) -> None:
        self._warn_once("closed", "losswatch: log() after close() is ignored", stacklevel=4)

    def _in_disabled_child(self, *args: Any) -> None:
        """In a forked child with in_child='disable': the parent reports the run."""

    def _first_in_fresh_child(self, step: int, loss: Any, grad_norm: Any, lr: Any, val_loss: Any,
                              extra: dict[str, Any]) -> None:
        """The first log() of a forked child with in_child='fresh': its own worker, then record."""
        self._log_instead = None if self._reports else self._on_silent_rank
        if not self._spool_dir_given:  # the default one is per process (segment names are anyway)
            self.spool_dir = _default_spool_dir(self.run_id)
        self._transport = self._transport.for_child()
        self._start(self._worker.flush_interval)
        self.log(step, loss, grad_norm, lr, val_loss, **extra)

    # ------------------------------------------------------------------ worker thread
    def _read(self, raw: list[tuple]) -> list[dict[str, Any]]:
        """The buffer's tuples as records (tensors read in one go), checked for NaN and shown
        to the Actor; in the worker's thread."""
        records, problems = resolve(raw)
        for p in problems:
            kind = p.split(":", 1)[0]
            self._warn_once("value:" + kind, f"losswatch: {p} (further {kind!r} problems are not reported)")
        self._verdicts.observe(records, alone=not self._transport.judges)
        self._actor_hook.observe(records)
        return records

    # ------------------------------------------------------------------ verdicts
    @property
    def alerts(self) -> list[dict[str, Any]]:
        return self._verdicts.alerts

    @property
    def recommendation(self) -> dict[str, Any] | None:
        return self._verdicts.recommendation

    @property
    def health(self) -> str:
        return self._verdicts.health

    @property
    def on_alert(self) -> Callable[[dict], Any] | None:
        return self._verdicts.on_alert

    @on_alert.setter
    def on_alert(self, fn: Callable[[dict], Any] | None) -> None:
        self._verdicts.on_alert = fn

    @property
    def flush_interval(self) -> float:
        """Seconds between sends at most; may be changed during the run (from the next cycle)."""
        return self._worker.flush_interval

    @flush_interval.setter
    def flush_interval(self, seconds: float) -> None:
        self._worker.flush_interval = seconds

    # ------------------------------------------------------------------ acting
    @property
    def actor(self) -> Any:
        """The run's one Actor (``losswatch.client.acting.Actor``), None unless acting is on."""
        return self._actor_hook.actor

    def attach_actor(self, optimizer: Any = None, scheduler: Any = None, *, act: bool = False,
                     act_dry_run: bool = False, on_rollback: Callable | None = None,
                     on_stop: Callable | None = None, actor_options: dict[str, Any] | None = None,
                     actor_cls: Any = None) -> Any:
        """The run's one Actor, for an integration asked to act (``act`` or ``act_dry_run``).

        The first caller on a Monitor made without ``act`` turns acting on with its settings.
        When acting is already on (``Monitor(act=True)``, an earlier integration) the same Actor
        comes back, with one warning: it decides once per step, whoever offers the step (this
        Monitor's ``log()`` or the integration), so no decision is applied twice. Parts the
        Actor lacks (optimizer, scheduler, on_rollback, on_stop) are taken from this call;
        settings it has are kept.
        """
        if not (act or act_dry_run):
            return self.actor
        parts = dict(optimizer=optimizer, scheduler=scheduler, on_rollback=on_rollback, on_stop=on_stop)
        return self._actor_hook.attach(parts, act=act, act_dry_run=act_dry_run, actor_options=actor_options,
                                       actor_cls=actor_cls, run_id=self.run_id)

    # ------------------------------------------------------------------ public
    def update_meta(self, fields: dict[str, Any]) -> None:
        """Add or replace run metadata fields mid-run (an integration telling the optimizer, a
        changed schedule). The whole metadata is sent again (PUT replaces it on the service) and
        the in-process detectors get it too. Never raises: fields the service would refuse (an
        unknown ``objective``) are not applied, with one warning."""
        try:
            objective_of(fields)  # an unknown objective: refused here, not a 422 on every later PUT
            self.meta.update(fields)
            if self._worker.in_this_process and self._transport.set_meta(self.meta):
                self._wake.set()
        except Exception as e:  # noqa: BLE001 - monitoring must never break training
            self._warn_once(f"meta {e!r}", f"losswatch: could not update the run metadata: {e!r}")

    @property
    def checkpoints(self) -> Any:
        """The checkpoints recorded with :meth:`checkpoint` (``losswatch.client.checkpoints``)."""
        cks = self.__dict__.get("_checkpoints")
        if cks is None:
            from .checkpoints import Checkpoints

            cks = self._checkpoints = Checkpoints()
        return cks

    def checkpoint(self, step: int, path_or_token: Any) -> None:
        """Record that the state after ``step`` steps was saved at ``path_or_token`` (a path, or
        anything your ``on_rollback(step, checkpoint)`` reads back). A rollback returns to the
        latest one saved before the incident began. The last 8 are kept; the service is told
        their steps (and paths) in the run metadata (``checkpoints``), and the in-process
        detectors keep their state at each, restored after a rollback. Never raises on a bad
        path (a deleted one is said when a rollback needs it); a bad step is a ValueError."""
        ck = self.checkpoints.add(step, path_or_token)
        self._transport.checkpoint(ck.step)
        self.update_meta({"checkpoints": [c.to_dict() for c in self.checkpoints]})

    def mark_rewind(self, to_step: int, at_step: int) -> None:
        """The run was rolled back at ``at_step`` to the state after ``to_step`` steps: the loop
        will log steps it logged before. The service is told in the run metadata (``rewinds``:
        the last 8, each ``{"to_step", "at_step"}``); the in-process detectors go back to their
        state at that checkpoint. Called by the Actor after a rollback."""
        rewinds = list(self.meta.get("rewinds") or [])[-7:]
        rewinds.append({"to_step": int(to_step), "at_step": int(at_step)})
        self._transport.rewind(int(to_step))
        self.update_meta({"rewinds": rewinds})

    def report_action(self, step: int, action: dict[str, Any], applied: bool, dry_run: bool = False) -> None:
        """Tell the service an action was applied (or would have been, in dry-run). Non-blocking."""
        if not self._worker.in_this_process:
            return  # a forked child without a worker of its own
        entry = {"step": int(step), "action": dict(action), "applied": bool(applied),
                 "dry_run": bool(dry_run)}
        self.actions.append(entry)
        if self._transport.report_action(entry):
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Send everything logged so far; True when it all reached the service within ``timeout``."""
        if not self._worker.in_this_process:
            return True
        return self._worker.flush(timeout)

    def close(self, timeout: float | None = None, finished: bool = True) -> None:
        """Flush (at most ``timeout``, default ``exit_timeout``; one attempt when the service is
        down), stop the thread, keep leftovers.

        ``finished``: the run ended as planned. The metadata then says ``"status": "finished"``
        (sent after the last records: when many runs close at once, their steps go first), so
        the service exports ``losswatch_run_finished`` and
        the stopped-reporting alert leaves the run alone; a ``with`` block that ends in an
        exception, or an interpreter exit after an unhandled one, passes False (a crash should
        still be noticed). Records that could not be sent are written to one JSON-lines file in
        ``spool_dir`` and named in a warning, so nothing is silently lost; a finished status
        that could not be sent is named in a warning too.

        Called inside an ``on_alert`` callback (the sender thread) it returns at once: the thread
        sends what is left in one more cycle and keeps what it could not send, as above. A later
        ``close()``, or the interpreter's exit, waits for that cycle (at most ``timeout``).
        """
        worker = self._worker
        if not worker.in_this_process:
            return
        if self._closed:
            if worker.finishes_itself and not worker.on_its_thread:
                # closed from an on_alert callback: its thread's last cycle may still be sending
                # (at interpreter exit too); wait for it as a close would, no longer
                worker.join(self.exit_timeout if timeout is None else timeout)
                if worker.alive:
                    # the thread that closed the run is still busy (in the callback, or sending a
                    # backlog to a slow service): what it still holds goes with the process; say so
                    n = len(worker.spool) + len(worker.buffer)
                    if n:
                        warnings.warn(f"losswatch: {n} unsent records of run {self.run_id} were lost: the "
                                      f"run was closed from an on_alert callback whose thread was still "
                                      f"busy at the end (in the callback, or sending)", RuntimeWarning,
                                      stacklevel=2)
                _live.discard(self)
            return
        if finished and self.meta.get("status") != "finished":
            self.meta["status"] = "finished"
            worker.close_run(self.meta)
        self._closed = True
        self._log_instead = self._after_close
        if worker.on_its_thread:
            # close() from an on_alert callback: the thread cannot wait for itself; it ends after
            # one more cycle that sends what is left and keeps what it could not send. The run
            # stays in _live, so an exit waits for that cycle
            worker.stop(0.0, send=True)
            return
        t = self.exit_timeout if timeout is None else timeout
        # one deadline for the whole exit: the flush leaves a moment of it for the last cycle
        # (without network when the service is not answering), and stop() cuts short an HTTP
        # attempt still under way rather than wait out its per-attempt timeout
        deadline = time.monotonic() + t
        ok = worker.flush(t - min(EXIT_RESERVE, t / 2), give_up_on_failure=True)
        worker.stop(max(0.0, deadline - time.monotonic()), send=ok)
        message = worker.finish()
        if message:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        _live.discard(self)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: records sent, POSTs, rejected records, failed attempts, outages, spool state."""
        s = dict(self._transport.stats)
        s.update(self._worker.counts)
        return s

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(finished=exc_type is None)

    def __repr__(self) -> str:
        return f"Monitor(run_id={self.run_id!r}, url={self.url!r}, health={self.health!r})"

    def _warn_once(self, key: str, message: str, stacklevel: int = 3) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)

    # ------------------------------------------------------------------ fork
    def _after_fork_in_child(self) -> None:
        # The worker's thread did not survive the fork and its locks may be held: never touch it
        # (its pid check says so). The parent's buffered records stay the parent's.
        self._worker.forget_in_child()
        self._verdicts.after_fork_in_child()
        self._actor_hook.after_fork_in_child()
        if self.in_child == "fresh" and not self._closed:
            # until its first log() the child has no worker of its own: flush(), close() and
            # report_action() see the parent's worker and do nothing
            self._log_instead = self._first_in_fresh_child
        else:
            self._log_instead = self._in_disabled_child


def _after_fork_in_child() -> None:
    for m in list(_live):
        try:
            m._after_fork_in_child()
        except Exception:
            pass


def _close_all_at_exit() -> None:
    # an unhandled exception is printed (and left in sys.last_value) before atexit handlers run
    finished = getattr(sys, "last_value", None) is None
    for m in list(_live):
        try:
            m.close(finished=finished)
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
