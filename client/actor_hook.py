"""How advice reaches the run's one Actor: in the training thread, at ``log()``, only when needed.

Advice arrives in the worker's thread (a verdict); changing the optimizer must happen in the
training thread, between two steps. So a verdict with advice only sets :attr:`ActorHook.pending`,
and the next ``log()`` (which looks at that one attribute) hands it to
``losswatch.client.acting.Actor.follow``. While the Actor holds advice back (waiting for
confirmation, a cooldown) or verifies an action, the hook offers the step again.

The run has one Actor, built on first need from the Monitor's acting options; an integration
asked to act attaches to it (:meth:`ActorHook.attach`) rather than building a second one. In a
multi-rank job the hook also owns the :class:`~.distributed.DecisionSync` that has every rank
make rank 0's decisions at the same step.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from .verdicts import Verdicts


class ActorHook:
    """The Monitor's acting: its options, its one Actor, and the advice waiting for it.

    Parameters
    ----------
    monitor : Monitor
        What the Actor acts through (``recommendation``, ``alerts``, ``report_action``,
        ``mark_rewind``, ``checkpoints``).
    verdicts : Verdicts
        Where advice comes from (this hook becomes its ``on_advice``).
    config : dict
        The Actor's arguments (``optimizer``, ``scheduler``, ``on_rollback``, ``on_stop``,
        ``dry_run``, and the ``actor_options``).
    acting : bool
        Acting is on from the start (``act`` or ``act_dry_run``).
    rank, world_size : int
        This process in a ``torch.distributed`` job (0, 1 otherwise).
    sync_every, sync_timeout
        How rank 0's decisions are shared (:class:`~.distributed.DecisionSync`).
    warn_once : callable
        ``warn_once(key, message)``, the Monitor's.

    Attributes
    ----------
    pending : dict or None
        Advice for the Actor to consider at the next ``log()`` (read there at every step).
    sync : DecisionSync or None
        Set in a multi-rank job with acting on (``log()`` hands it every step).
    """

    def __init__(self, monitor: Any, verdicts: Verdicts, config: dict[str, Any], acting: bool, *,
                 rank: int = 0, world_size: int = 1, sync_every: int = 10, sync_timeout: float = 60.0,
                 warn_once: Callable[[str, str], None]) -> None:
        self.monitor = monitor
        self.config = config
        self.acting = acting
        self.pending: dict | None = None
        self.sync: Any = None
        self._verdicts = verdicts
        self._rank, self._world_size = rank, world_size
        self._sync_options = (sync_every, sync_timeout)
        self._warn_once = warn_once
        self._actor: Any = None
        self._actor_failed = False
        self._not_before: int | None = None  # a cooldown holds standing advice until this step
        self._lock = threading.Lock()
        verdicts.on_advice = self.offer
        if acting:
            self._share_decisions()

    # ------------------------------------------------------------ worker thread
    def offer(self, advice: dict) -> None:
        """New advice from a verdict: the Actor considers it at the next ``log()``."""
        if self.acting:
            with self._lock:
                self.pending = advice  # Actor.follow finds the alert that carries it

    def observe(self, records: list[dict[str, Any]]) -> None:
        """One cycle's resolved records: what the Actor verifies its actions against."""
        actor = self._actor
        if actor is not None and records:
            actor.observe(records)

    # ------------------------------------------------------------ training thread
    def nonfinite_loss(self, step: int) -> None:
        """``log()`` saw a non-finite loss: an action in its verification window just failed,
        and is judged at this very ``log()``."""
        actor = self._actor
        if actor is not None and actor.verifying:
            actor.note_nonfinite(step)
            with self._lock:
                self.pending = self.pending or {"type": "verify"}

    def at(self, step: int) -> None:
        """Let the Actor consider the standing advice (``Actor.follow``), in the training thread.

        WHY every step while something waits: the Actor holds advice back until it is confirmed
        (an alert spanning >= 3 steps) or a cooldown ends; offering it only when the advice
        changed meant such advice was never applied. ``follow`` itself skips advice it has
        already decided on, so this costs a few microseconds per step only while advice waits;
        with nothing pending ``log()`` pays one attribute check.
        """
        wait = self._not_before
        if wait is not None and step < wait:
            return  # a cooldown holds the standing advice back: nothing can change before it ends
        with self._lock:
            pending, self.pending = self.pending, None
        if pending is None:
            return
        actor = self.get()
        if actor is None:
            return
        self._not_before = None
        try:
            actor.follow(step, self.monitor)
        except Exception as e:
            self._warn_once("actor", f"losswatch: acting on {pending.get('type')} failed: {e!r}")
            return
        if self._verdicts.recommendation is None and not actor.verifying:
            return
        # advice that waits for confirmation, or an action in its verification window, is offered
        # again on the next step; advice held back by a cooldown when the cooldown ends
        again = actor.offer_again_at(step)
        if actor.verifying:
            again = step  # an action in its verification window: judged at every log()
        if again is not None:
            # a step counter that goes back (a restart after rollback, one counter per epoch)
            # must not hold waiting advice back: only a cooldown's end sets a step to wait for
            self._not_before = again if again > step else None
            with self._lock:
                if self.pending is None:
                    self.pending = pending

    # ------------------------------------------------------------ the Actor
    @property
    def actor(self) -> Any:
        """The run's one Actor, None unless acting is on."""
        return self.get() if self.acting else None

    def get(self, actor_cls: Any = None) -> Any:
        """The run's one Actor, built on first need (None when it cannot be: warned once)."""
        if self._actor is None and not self._actor_failed:
            try:
                if actor_cls is None:
                    from .acting import Actor as actor_cls
                self._actor = actor_cls(monitor=self.monitor, **self.config)
                if self.sync is not None:
                    self._actor.shared = self.sync
            except Exception as e:
                self._actor_failed = True
                self._warn_once("actor_import", f"losswatch: act=True but the acting hook is unavailable: {e!r}")
        return self._actor

    def attach(self, parts: dict[str, Any], *, act: bool, act_dry_run: bool,
               actor_options: dict[str, Any] | None, actor_cls: Any, run_id: str) -> Any:
        """The Actor for an integration asked to act (``Monitor.attach_actor``): the first one
        turns acting on with its settings; a later one gets the same Actor, with one warning,
        and fills in only the parts it lacks."""
        if not self.acting:
            config = dict(self.config)  # parts given to the Monitor itself stay unless replaced
            config.update({k: v for k, v in parts.items() if v is not None}, **(actor_options or {}))
            config["dry_run"] = bool(act_dry_run) and not act
            self.config = config
            self.acting = True
            self._share_decisions()
            actor = self.get(actor_cls)
            self._verdicts.replay_advice()  # advice that stood before acting was on
            return actor
        self._warn_once("second_actor",
                        f"losswatch: acting was asked for twice on run {run_id}; the Monitor's one "
                        f"Actor is shared and decides once per step (settings already given are kept)")
        actor = self.get(actor_cls)
        if actor is not None:
            actor.fill_in(**parts)
        return actor

    def _share_decisions(self) -> None:
        """In a multi-rank job, acting is decided on rank 0 and applied on every rank alike."""
        if self._world_size > 1 and self.sync is None:
            from .distributed import DecisionSync

            self.sync = DecisionSync(self.monitor, self._rank, self._world_size, *self._sync_options)

    def after_fork_in_child(self) -> None:
        """Advice the parent was about to act on is the parent's; a copied lock may be held."""
        self.pending = None
        self._not_before = None
        self._lock = threading.Lock()
