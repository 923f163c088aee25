"""``Monitor``: the object a training loop holds. ``log()`` is the only thing on the hot path.

What ``log()`` does, and nothing more: detach tensors (no copy, no sync), check Python floats for
NaN/inf (a subtraction), append one tuple to a deque (thread-safe under the GIL, no lock), wake
the sender when a batch is full, and look at one attribute for a pending action. Everything else
(reading tensors, encoding, sending, retrying, spilling, detectors, user callbacks) happens in
the background thread of :mod:`.sender`.

Fork policy (``in_child``): a forked child (a DataLoader worker, a multiprocessing pool) does not
inherit the parent's thread, and must not re-send the parent's buffered records. By default
(``"disable"``) ``log()`` in a child does nothing: the parent is the one that reports the run, and
DataLoader workers never duplicate records. ``in_child="fresh"`` gives a child its own empty buffer,
spool and sender on its first ``log()`` (for a child that owns steps of its own).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import warnings
import weakref
from collections import deque

from losswatch.detectors.events import event_between

from .local import LocalEngine, NanWatch
from .values import encode, hold, resolve

# Import cost matters (a training script imports this first thing): http.client, json, tempfile
# and the sender/spool modules are imported when a Monitor is built, not here.
# typing costs ~3 ms to import; annotations are strings (PEP 563), so only checkers need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = ["Monitor"]

_time = time.time
_live: "weakref.WeakSet[Monitor]" = weakref.WeakSet()

#: of close()'s deadline, what the flush leaves for stopping the sender (its last cycle, cutting
#: short a request a frozen service never answers): at most this, half of a shorter deadline
EXIT_RESERVE = 0.5

_RUN_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


_RANK = {"ok": 0, "info": 0, "warning": 1, "critical": 2}  # health and severity, worst last


def _is_advice(action: dict | None) -> bool:
    """An action to take (not missing, not ``{"type": "none"}``)."""
    return bool(action) and action.get("type") not in (None, "none")


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
        step; a batch of 1-500 records every half second is nothing for the service).
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
                 on_alert: Callable[[dict], Any] | None = None, *, flush_interval: float = 0.5,
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
        self._silent = self.rank != 0 and ranks == "zero"
        self._sync_options = (sync_every, sync_timeout)
        self.run_id = str(run_id) if run_id is not None else f"run-{int(time.time())}-{os.getpid()}"
        if ranks == "all" and self.world_size > 1:
            self.run_id = rank_run_id(self.run_id, self.rank)
        self.url = url if url is not None else (os.environ.get("LOSSWATCH_URL") or None)
        if self.url and not (0 < len(self.run_id) <= 128 and _RUN_ID_CHARS.issuperset(self.run_id)):
            # checked here, once, rather than having every POST rejected later
            raise ValueError(f"run_id must be 1-128 characters of [A-Za-z0-9._:-], got {self.run_id!r}")
        self.project = project
        self.meta = dict(meta) if meta else {}
        if self.world_size > 1:
            self.meta.setdefault("world_size", self.world_size)
            if ranks == "all":
                self.meta.setdefault("rank", self.rank)
        self.token = token if token is not None else (os.environ.get("LOSSWATCH_TOKEN") or None)
        self.on_alert = on_alert
        self.flush_interval = flush_interval
        self.batch_size = int(batch_size)
        self._spool_dir_given = spool_dir is not None
        self.spool_dir = spool_dir or _default_spool_dir(self.run_id)
        self.max_memory_records = max_memory_records
        self.max_spool_bytes = max_spool_bytes
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.exit_timeout = exit_timeout
        self.in_child = in_child
        actor_options = dict(actor_options or {})
        for old, new, v in (("act_cooldown_steps", "cooldown_steps", act_cooldown_steps),
                            ("act_max", "max_actions", act_max)):
            if v is not None:  # the former spelling, kept working for a while
                warnings.warn(f"Monitor({old}=...) is deprecated: use actor_options={{{new!r}: ...}}, "
                              f"the spelling every integration uses", DeprecationWarning, stacklevel=2)
                actor_options.setdefault(new, v)
        self._act_config: dict[str, Any] = dict(
            optimizer=optimizer, scheduler=scheduler, on_rollback=on_rollback, on_stop=on_stop,
            dry_run=bool(act_dry_run) and not act, **actor_options)
        self._acting = bool(act or act_dry_run)
        self._actor: Any = None  # the run's one Actor, built on first need (see attach_actor)
        self._actor_failed = False
        self._sync: Any = None  # shares rank 0's decisions with every rank (client/distributed.py)
        if self._acting:
            self._share_decisions()

        self.alerts: list[dict[str, Any]] = []
        self.recommendation: dict[str, Any] | None = None
        self.health = "ok"
        self.actions: list[dict[str, Any]] = []
        self._alert_index: dict[str, int] = {}
        self._notified: dict[str, dict[str, Any]] = {}  # id -> the version on_alert was given
        self._state_lock = threading.Lock()
        self._callbacks: deque[dict[str, Any]] = deque()
        # set (to the advice) when the Actor has something to look at on the next log(): new
        # advice from a verdict, or standing advice that waits for confirmation or a cooldown
        self._pending: dict | None = None
        self._act_not_before: int | None = None  # a cooldown holds standing advice until here
        self._warned: set[str] = set()
        self._closed = False
        self._pid = os.getpid()
        self._nan = NanWatch(self.run_id)
        self._local: LocalEngine | None = None
        self._start()
        _live.add(self)
        if self._silent:
            return
        from .announce import run_started  # the logging module is imported here, not at import

        run_started(self.run_id, self.url, self._local is None or self._local.available, self.project)

    # ------------------------------------------------------------------ setup
    def _start(self) -> None:
        """A fresh buffer and background thread (at construction, and in a 'fresh' fork child)."""
        from .sender import Sender, Transport, run_path
        from .spool import Spool

        self._q: deque[tuple] = deque()
        # a silent rank (see ``ranks``) has no transport: it never sends, so it never spools either
        transport = Transport(self.url, self.token, self.timeout) if self.url and not self._silent else None
        if transport is None and self._local is None and not self._silent:
            self._local = LocalEngine(self.run_id, self.meta)
        self._sender = Sender(
            collect=self._collect, pending=self._q.__len__, after_cycle=self._fire_callbacks,
            on_reply=self._on_reply, transport=transport,
            spool=Spool(self.spool_dir, self.max_memory_records, self.max_spool_bytes),
            run_path=run_path(self.run_id), project=self.project, batch_size=self.batch_size,
            flush_interval=self.flush_interval, max_backoff=self.max_backoff)
        self._wake = self._sender.wake
        if transport is not None:
            self._put_meta()

    def _put_meta(self) -> None:
        """Queue PUT /v1/runs/<id> with the whole metadata (sent before the next records)."""
        body: dict[str, Any] = dict(self.meta)  # the service keeps unknown fields as they are
        if self.project is not None:
            body["project"] = self.project
        self._sender.controls.append(("PUT", self._sender.run_path, body))

    # ------------------------------------------------------------------ hot path
    def log(self, step: int, loss: Any = None, grad_norm: Any = None, lr: Any = None,
            val_loss: Any = None, **extra: Any) -> None:
        """Record one step. Never blocks, never raises; costs about a microsecond.

        Values may be Python/numpy numbers or torch tensors (read later, in the background, in
        one batch: no host-device sync here). A non-finite float loss or grad-norm raises the NaN
        alert right here; a tensor one is caught when the batch is read, off the hot path.
        """
        try:
            if self._silent:  # rank 0 reports the run; this rank only applies shared decisions
                if self._sync is not None:
                    self._sync.at(step)
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
            if self._pending is not None:
                # after the NaN check: a NaN in this very step is acted on before the optimizer
                # steps (the NaN ladder skips this batch)
                self._apply_pending(step)
            if self._sync is not None:  # after this step's decision: shared at this sync step
                self._sync.at(step)
            if extra:
                for k, v in extra.items():
                    if v.__class__ is not float:
                        extra[k] = hold(v)
            else:
                extra = None  # type: ignore[assignment]
            q = self._q
            q.append((step, loss, grad_norm, lr, val_loss, _time(), extra))
            if len(q) >= self.batch_size:
                self._wake.set()
        except Exception as e:  # monitoring must never break training
            self._warn_once("log", f"losswatch: Monitor.log failed and skipped a step: {e!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.log(*args, **kwargs)

    # ------------------------------------------------------------------ training-thread helpers
    def _nan_now(self, step: int, loss: Any, grad_norm: Any) -> None:
        actor = self._actor
        if actor is not None and actor.verifying and loss.__class__ is float and loss - loss != 0.0:
            actor.note_nonfinite(step)  # an action in its window just failed: judged on this log()
            self._pending = self._pending or {"type": "verify"}
        alert = self._nan.check(step, loss, grad_norm, in_log=True)
        if alert is not None:
            self._merge_alerts([alert], local=True)
            self._wake.set()  # run the on_alert callback promptly (in the background thread)

    def _apply_pending(self, step: int) -> None:
        """Let the Actor consider the standing advice (``Actor.follow``), in the training thread.

        WHY every step while something waits: the Actor holds advice back until it is confirmed
        (an alert spanning >= 3 steps) or a cooldown ends; offering it only when the advice
        changed meant such advice was never applied (closed-loop issue 5). ``follow`` itself
        skips advice it has already decided on, so this costs a few microseconds per step only
        while advice waits; with nothing pending log() pays one attribute check.
        """
        wait = self._act_not_before
        if wait is not None and step < wait:
            return  # a cooldown holds the standing advice back: nothing can change before it ends
        with self._state_lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        actor = self._get_actor()
        if actor is None:
            return
        self._act_not_before = None
        try:
            actor.follow(step, self)
        except Exception as e:
            self._warn_once("actor", f"losswatch: acting on {pending.get('type')} failed: {e!r}")
            return
        if self.recommendation is None and not actor.verifying:
            return
        # advice that waits for confirmation, or an action in its verification window, is offered
        # again on the next step; advice held back by a cooldown when the cooldown ends
        again = actor.offer_again_at(step)
        if actor.verifying:
            again = step  # an action in its verification window: judged at every log()
        if again is not None:
            # a step counter that goes back (a restart after rollback, one counter per epoch)
            # must not hold waiting advice back: only a cooldown's end sets a step to wait for
            self._act_not_before = again if again > step else None
            with self._state_lock:
                if self._pending is None:
                    self._pending = pending

    def _get_actor(self, actor_cls: Any = None) -> Any:
        if self._actor is None and not self._actor_failed:
            try:
                if actor_cls is None:
                    from .acting import Actor as actor_cls
                self._actor = actor_cls(monitor=self, **self._act_config)
                if self._sync is not None:
                    self._actor.shared = self._sync
            except Exception as e:
                self._actor_failed = True
                self._warn_once("actor_import",
                                f"losswatch: act=True but the acting hook is unavailable: {e!r}")
        return self._actor

    # ------------------------------------------------------------------ acting
    def _share_decisions(self) -> None:
        """In a multi-rank job, acting is decided on rank 0 and applied on every rank alike."""
        if self.world_size > 1 and self._sync is None:
            from .distributed import DecisionSync

            self._sync = DecisionSync(self, self.rank, self.world_size, *self._sync_options)

    @property
    def actor(self) -> Any:
        """The run's one Actor (``losswatch.client.acting.Actor``), None unless acting is on."""
        return self._get_actor() if self._acting else None

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
        if not self._acting:
            config = dict(self._act_config)  # parts given to the Monitor itself stay unless replaced
            config.update({k: v for k, v in parts.items() if v is not None}, **(actor_options or {}))
            config["dry_run"] = bool(act_dry_run) and not act
            self._act_config = config
            self._acting = True
            self._share_decisions()
            actor = self._get_actor(actor_cls)
            with self._state_lock:
                if self.recommendation is not None:
                    self._pending = self.recommendation  # advice that stood before acting was on
            return actor
        self._warn_once("second_actor",
                        f"losswatch: acting was asked for twice on run {self.run_id}; the Monitor's one "
                        f"Actor is shared and decides once per step (settings already given are kept)")
        actor = self._get_actor(actor_cls)
        if actor is not None:
            actor.fill_in(**parts)
        return actor

    # ------------------------------------------------------------------ background thread
    def _collect(self) -> list[str]:
        """Drain the buffer; read tensors; run the local checks; return encoded records."""
        q = self._q
        n = len(q)
        if not n:
            return []
        raw = [q.popleft() for _ in range(n)]
        records, problems = resolve(raw)
        for p in problems:
            kind = p.split(":", 1)[0]
            self._warn_once("value:" + kind, f"losswatch: {p} (further {kind!r} problems are not reported)")
        changed = self._nan.observe(records)
        if changed:
            self._merge_alerts(changed, local=True)
        actor = self._actor
        if actor is not None and records:
            actor.observe(records)  # what the Actor verifies its actions against
        if self._local is not None and self._local.available and records:
            try:
                alerts, rec, health = self._local.update(records)
                self._apply_verdict(alerts, rec, health)
            except Exception as e:
                self._local.available = False
                self._warn_once("engine", f"losswatch: local detectors failed and were switched "
                                          f"off (the NaN check goes on): {e!r}")
        if self._sender.transport is None:
            return []
        from json import dumps
        return [dumps(encode(r), allow_nan=False) for r in records]

    def _on_reply(self, reply: Any) -> None:
        if isinstance(reply, dict):
            self._apply_verdict(reply.get("alerts") or [], reply.get("recommendation"),
                                reply.get("health"), has_rec="recommendation" in reply)

    def _apply_verdict(self, alerts: list[dict], rec: dict | None, health: str | None,
                       has_rec: bool = True) -> None:
        if alerts:
            self._merge_alerts([a for a in alerts if isinstance(a, dict) and "id" in a], local=False)
        if health in ("ok", "warning", "critical"):
            # a NaN caught here but not yet seen by the service keeps the run critical
            self.health = "critical" if self._nan.critical else health
        if has_rec:
            rec = rec if isinstance(rec, dict) else None
            if rec is None and self._nan.critical:
                return  # the service has not seen the NaN caught here yet: keep that advice
            self._set_recommendation(rec)

    def _merge_alerts(self, alerts: list[dict], local: bool) -> None:
        """Keep the latest copy per alert id; queue on_alert for raised/escalated/resolved ones.

        The same episode can arrive from two sources (the local NaN check, then the service,
        whose detector may resolve it a few steps later), so on_alert gets what the user has not
        been told yet, judged against the version last handed to it (``event_between``): a new
        id, a higher severity or different advice, or the first resolution; never twice for one.
        The copy handed to on_alert carries the ``event``.
        """
        with self._state_lock:
            for a in alerts:
                i = self._alert_index.get(a["id"])
                if i is None:
                    self._alert_index[a["id"]] = len(self.alerts)
                    self.alerts.append(a)
                else:
                    self.alerts[i] = a
                event = event_between(self._notified.get(a["id"]), a)
                if event is not None:
                    self._notified[a["id"]] = a
                    self._callbacks.append(dict(a, event=event))
            if local:
                for a in alerts:
                    if a.get("resolved_step") is None:
                        if _RANK.get(a.get("severity"), 0) > _RANK.get(self.health, 0):
                            self.health = a["severity"]
                        if _is_advice(a.get("action")):
                            self._set_recommendation_locked(a["action"])
                if not self._nan.active and self._sender.transport is None and (
                        self._local is None or not self._local.available):
                    self.health = "ok"  # NaN-only mode: the run is healthy again

    def _set_recommendation(self, rec: dict | None) -> None:
        with self._state_lock:
            self._set_recommendation_locked(rec)

    def _set_recommendation_locked(self, rec: dict | None) -> None:
        advice = _is_advice(rec)
        self.recommendation = rec if advice else None
        if advice and self._acting:
            # every verdict that carries advice is shown to the Actor (on the next log()): the
            # same advice may now stand on an escalated or longer-lived alert; Actor.follow
            # drops what it has already decided on
            self._pending = rec  # Actor.follow finds the alert that carries it

    def _fire_callbacks(self) -> None:
        cb = self.on_alert
        if not self._callbacks:
            return
        from .announce import alert_event

        while self._callbacks:
            alert = self._callbacks.popleft()
            alert_event(self.run_id, alert)  # told on the losswatch logger, on_alert or not
            if cb is None:
                continue
            try:
                cb(alert)
            except Exception as e:
                self._warn_once("on_alert", f"losswatch: the on_alert callback raised {e!r}; "
                                            f"training goes on (warned once)")

    # ------------------------------------------------------------------ public
    def update_meta(self, fields: dict[str, Any]) -> None:
        """Add or replace run metadata fields mid-run (an integration telling the optimizer, a
        changed schedule). The whole metadata is sent again (PUT replaces it on the service) and
        the in-process detectors get it too. Never raises."""
        try:
            self.meta.update(fields)
            if self._sender.transport is not None:
                self._put_meta()
                self._wake.set()
            if self._local is not None:
                self._local.set_meta(self.meta)
        except Exception as e:  # noqa: BLE001 - monitoring must never break training
            self._warn_once("meta", f"losswatch: could not update the run metadata: {e!r}")

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
        if self._local is not None:
            self._local.snapshot_at(ck.step)
        self.update_meta({"checkpoints": [c.to_dict() for c in self.checkpoints]})

    def mark_rewind(self, to_step: int, at_step: int) -> None:
        """The run was rolled back at ``at_step`` to the state after ``to_step`` steps: the loop
        will log steps it logged before. The service is told in the run metadata (``rewinds``:
        the last 8, each ``{"to_step", "at_step"}``); the in-process detectors go back to their
        state at that checkpoint. Called by the Actor after a rollback."""
        rewinds = list(self.meta.get("rewinds") or [])[-7:]
        rewinds.append({"to_step": int(to_step), "at_step": int(at_step)})
        if self._local is not None:
            self._local.rewind_to(int(to_step))
        self.update_meta({"rewinds": rewinds})

    def report_action(self, step: int, action: dict[str, Any], applied: bool, dry_run: bool = False) -> None:
        """Tell the service an action was applied (or would have been, in dry-run). Non-blocking."""
        if os.getpid() != self._pid:
            return  # a forked child without a sender of its own
        entry = {"step": int(step), "action": dict(action), "applied": bool(applied),
                 "dry_run": bool(dry_run)}
        self.actions.append(entry)
        if self._sender.transport is not None:
            self._sender.controls.append(("POST", self._sender.run_path + "/actions", entry))
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Send everything logged so far; True when it all reached the service within ``timeout``."""
        if os.getpid() != self._pid:
            return True
        return self._sender.flush(timeout)

    def close(self, timeout: float | None = None, finished: bool = True) -> None:
        """Flush (at most ``timeout``, default ``exit_timeout``; one attempt when the service is
        down), stop the thread, keep leftovers.

        ``finished``: the run ended as planned. The metadata then says ``"status": "finished"``
        (sent before the last records), so the service exports ``losswatch_run_finished`` and
        the stopped-reporting alert leaves the run alone; a ``with`` block that ends in an
        exception, or an interpreter exit after an unhandled one, passes False (a crash should
        still be noticed). Records that could not be sent are written to one JSON-lines file in
        ``spool_dir`` and named in a warning, so nothing is silently lost.
        """
        if self._closed or os.getpid() != self._pid:
            return
        if finished and self.meta.get("status") != "finished":
            self.update_meta({"status": "finished"})
        self._closed = True
        self.log = self._log_closed  # type: ignore[method-assign]
        if threading.current_thread() is self._sender._thread:
            # close() from an on_alert callback: the thread cannot wait for itself; it ends after
            # one more cycle that sends what is left
            self._sender.stop(0.0, send=True)
            _live.discard(self)
            return
        t = self.exit_timeout if timeout is None else timeout
        # one deadline for the whole exit: the flush leaves a moment of it for the last cycle
        # (without network when the service is not answering), and stop() cuts short an HTTP
        # attempt still under way rather than wait out its per-attempt timeout
        deadline = time.monotonic() + t
        ok = self._sender.flush(t - min(EXIT_RESERVE, t / 2), give_up_on_failure=True)
        self._sender.stop(max(0.0, deadline - time.monotonic()), send=ok)
        if self._sender.transport is not None:
            self._sender.transport.close()
            spool = self._sender.spool
            if self._sender.alive:
                n = len(spool) + len(self._q)
                if n:
                    warnings.warn(f"losswatch: {n} unsent records of run {self.run_id} were lost: the "
                                  f"sender was still waiting for {self.url} at the end", RuntimeWarning,
                                  stacklevel=2)
            elif len(spool):
                path = spool.spill_all()
                warnings.warn(f"losswatch: the service at {self.url} could not be reached before "
                              f"the end; unsent records of run {self.run_id} are kept in {path}",
                              RuntimeWarning, stacklevel=2)
        self._sender.spool.remove_directory_if_empty()
        _live.discard(self)

    def _log_closed(self, *args: Any, **kwargs: Any) -> None:
        self._warn_once("closed", "losswatch: log() after close() is ignored")

    @property
    def stats(self) -> dict[str, int]:
        """Counters: records sent, POSTs, rejected records, failed attempts, outages, spool state."""
        s = dict(self._sender.stats)
        s.update(buffered=len(self._q), spooled=len(self._sender.spool),
                 spilled=self._sender.spool.spilled, dropped=self._sender.spool.dropped)
        return s

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(finished=exc_type is None)

    def __repr__(self) -> str:
        return f"Monitor(run_id={self.run_id!r}, url={self.url!r}, health={self.health!r})"

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ fork
    def _after_fork_in_child(self) -> None:
        # The sender thread did not survive the fork and its locks may be held: drop them all.
        # The parent's buffered records stay the parent's (no duplicates from workers).
        self._q = deque()
        self._callbacks = deque()
        self._pending = None
        self._act_not_before = None
        self._state_lock = threading.Lock()
        self._nan._lock = threading.Lock()
        if self.in_child == "fresh" and not self._closed:
            # until its first log() the child has no sender of its own: flush(), close() and
            # report_action() see a foreign pid and do nothing (they would touch the parent's
            # Sender, whose locks may have been copied in a held state)
            self.log = self._log_first_in_child  # type: ignore[method-assign]
        else:
            self.log = self._log_disabled  # type: ignore[method-assign]

    def _log_disabled(self, *args: Any, **kwargs: Any) -> None:
        """log() in a forked child with in_child='disable': the parent reports the run."""

    def _log_first_in_child(self, *args: Any, **kwargs: Any) -> None:
        del self.log  # back to the class's log()
        self._pid = os.getpid()
        if not self._spool_dir_given:  # the default one is per process (segment names are anyway)
            self.spool_dir = _default_spool_dir(self.run_id)
        self._start()
        self.log(*args, **kwargs)


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
