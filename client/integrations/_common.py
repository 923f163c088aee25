"""What every framework integration shares: opening (or borrowing) a Monitor, building an Actor,
and turning a framework's numbers into the floats/tensors Monitor.log accepts.

Imports no framework and no torch.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from ..acting import Actor
from ..values import hold, is_tensor


class Session:
    """One run's Monitor (owned or borrowed) and, when acting is enabled, its Actor.

    Parameters
    ----------
    monitor : Monitor or None
        Use this Monitor (the caller closes it). None: one is opened from ``monitor_options`` and
        closed by :meth:`close`.
    act, act_dry_run : bool
        Opt in to acting (dry run: decide and report, change nothing).
    actor_options : dict or None
        Extra :class:`~losswatch.client.acting.Actor` arguments (cooldown_steps, max_actions,
        min_persist_steps, on_rollback).
    monitor_options : dict
        Monitor arguments (run_id, url, project, meta, token, ...).
    """

    def __init__(
        self,
        monitor: Any = None,
        *,
        act: bool = False,
        act_dry_run: bool = False,
        actor_options: dict[str, Any] | None = None,
        **monitor_options: Any,
    ) -> None:
        self._given = monitor
        self.monitor: Any = monitor
        self.act = bool(act)
        self.act_dry_run = bool(act_dry_run) and not self.act
        self.actor_options = dict(actor_options or {})
        self.monitor_options = {k: v for k, v in monitor_options.items() if v is not None}
        self.actor: Actor | None = None
        self.no_loss: NoLossWatch | None = None  # set by the callback (it knows the likely cause)

    @property
    def acting(self) -> bool:
        return self.act or self.act_dry_run

    def open(self, default_run_id: str | None = None, meta: dict[str, Any] | None = None) -> Any:
        """The Monitor, opened on first use (run_id: the given one, the framework's, or random)."""
        if self.monitor is None:
            from ..monitor import Monitor  # the client's own Monitor; stdlib only

            opts = dict(self.monitor_options)
            opts.setdefault("run_id", default_run_id or f"run-{uuid.uuid4().hex[:12]}")
            if meta:
                opts["meta"] = {**meta, **(opts.get("meta") or {})}
            self.monitor = Monitor(**opts)
        return self.monitor

    def make_actor(self, optimizer: Any = None, scheduler: Any = None, actor_cls: type = Actor, **kw: Any) -> Actor | None:
        """The run's Actor once acting is enabled (None otherwise): the Monitor's one Actor
        (``Monitor.attach_actor``), or one built here for a monitor of another kind."""
        if not self.acting:
            return None
        opts = {**self.actor_options, **kw}
        attach = getattr(self.monitor, "attach_actor", None)
        if attach is not None:
            parts = {k: opts.pop(k, None) for k in ("on_rollback", "on_stop")}
            self.actor = attach(optimizer, scheduler, act=self.act, act_dry_run=self.act_dry_run,
                                actor_options=opts, actor_cls=actor_cls, **parts)
        else:
            self.actor = actor_cls(optimizer, scheduler, dry_run=self.act_dry_run, monitor=self.monitor, **opts)
        return self.actor

    def log(self, step: int, **fields: Any) -> None:
        """One record to the Monitor; a run that never carries a loss is said so once."""
        self.monitor.log(step, **fields)
        if self.no_loss is not None:
            self.no_loss.record(self.monitor, fields.get("loss"))

    def follow(self, step: int) -> bool:
        """Let the Actor consider the current advice; True when training should stop."""
        if self.actor is None:
            return False
        self.actor.follow(step, self.monitor)
        return self.actor.stop_requested

    def close(self, timeout: float = 10.0) -> None:
        """Flush; close the Monitor if this session opened it."""
        if self.actor is not None:
            self.actor.close()
        if self.monitor is None:
            return
        if self._given is None:
            self.monitor.close()
        else:
            flush = getattr(self.monitor, "flush", None)
            if flush is not None:
                flush(timeout)


#: steps and seconds (both must pass) after which an integration that has recorded no loss says so
NO_LOSS_AFTER = (200, 120.0)


class NoLossWatch:
    """Says once, on the ``losswatch`` logger, that a run has recorded no loss after ``after``
    = (steps, seconds) (whichever comes later), naming the likely ``cause``: a callback wired to
    the wrong key or a training step that returns no loss is otherwise a run that shows nothing
    and reads as healthy. ``after=None`` turns it off. After the first loss it costs one check.
    """

    def __init__(self, cause: str, after: tuple[int, float] | None = NO_LOSS_AFTER) -> None:
        self.cause = cause
        self.done = after is None
        self.steps, self.seconds = after if after is not None else (0, 0.0)
        self.count = 0
        self.started: float | None = None

    def record(self, monitor: Any, loss: Any) -> None:
        if self.done:
            return
        if loss is not None:
            self.done = True
            return
        self.count += 1
        now = time.monotonic()
        if self.started is None:
            self.started = now
        if self.count >= self.steps and now - self.started >= self.seconds:
            self.done = True
            from ..announce import log

            log.warning("losswatch: run %s has recorded no loss in %d steps (%.0f s): %s",
                        getattr(monitor, "run_id", "?"), self.count, now - self.started, self.cause)


class SessionCallback:
    """Mixed into each framework callback: ``monitor`` and ``actor`` read from its ``session``."""

    session: Session

    @property
    def monitor(self) -> Any:
        return self.session.monitor

    @property
    def actor(self) -> Any:
        return self.session.actor


def number(v: Any) -> Any:
    """A framework's scalar as something Monitor.log takes: tensors pass unchanged (read at flush
    time, no sync here), numpy scalars and strings become floats, None stays None."""
    if v is None:
        return None
    if is_tensor(v):
        return hold(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def optimizer_meta(optimizer: Any) -> dict[str, Any]:
    """The optimizer's class name and momentum as run metadata: with them the service knows a
    run is plain SGD and how long its steps are (the ``sgd_efficiency`` detector needs both).

    torch optimizers (and wrappers exposing ``param_groups``): the first group's ``momentum``;
    Keras: the ``momentum`` attribute. Optimizers without momentum (Adam...) give the name only.
    """
    if optimizer is None:
        return {}
    out: dict[str, Any] = {"optimizer": type(optimizer).__name__}
    groups = getattr(optimizer, "param_groups", None)
    m = groups[0].get("momentum") if groups else getattr(optimizer, "momentum", None)
    try:
        m = float(m) if m is not None and not isinstance(m, bool) else None
    except (TypeError, ValueError):
        m = None
    if m is not None and math.isfinite(m):
        out["momentum"] = m
    return out


def plain_metadata(d: Any, depth: int = 0) -> Any:
    """Run metadata (a trial config, training arguments) reduced to plain JSON values: nesting
    cut at depth 4 and lists at 100 items, a non-finite float and any other object as its text."""
    if depth > 4:
        return str(d)
    if isinstance(d, dict):
        return {str(k): plain_metadata(v, depth + 1) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [plain_metadata(v, depth + 1) for v in d][:100]
    if isinstance(d, bool) or d is None or isinstance(d, (int, str)):
        return d
    if isinstance(d, float):
        return d if math.isfinite(d) else str(d)
    return str(d)


def lazy_class(module: str, name: str, build: Any) -> Any:
    """A module-level ``__getattr__`` that builds class ``name`` on first access.

    A framework callback must subclass the framework's own base class, which must not be imported
    when losswatch.client is: so the class is defined inside ``build()`` and built only when the
    user reaches for it (``from ...lightning import LosswatchCallback``)."""
    built: dict[str, Any] = {}

    def __getattr__(attr: str) -> Any:
        if attr != name:
            raise AttributeError(f"module {module!r} has no attribute {attr!r}")
        if name not in built:
            built[name] = build()
        return built[name]

    return __getattr__

