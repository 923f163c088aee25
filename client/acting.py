"""Acting on losswatch's advice inside the training process (opt-in).

An :class:`Actor` turns a recommendation (``{"type": "scale_lr", "factor": 0.1, "reason": ...}``)
into a change of the running training job: it scales the optimizer's learning rate (and the
scheduler's future values), installs gradient clipping, calls a user-supplied rollback function,
or asks the training loop to stop. Guardrails keep it from doing harm:

- **confirmation**: no action on a single noisy step. An action is taken only when the alert's
  episode has persisted for ``min_persist_steps`` steps (``last_step - step``, or the span the
  detector's evidence covers), when the alert is a NaN (a NaN loss never recovers by itself), or
  when the same action was already recommended at an earlier step (confirmation on the next
  recommendation);
- **cooldown**: at least ``cooldown_steps`` steps between two interventions, so the run can show
  whether the first one worked;
- **cap**: at most ``max_actions`` interventions per run;
- **one action per episode update**: an alert (by id) is acted on once, unless the detector
  escalated it since (``evidence["escalation"]`` counts up: the detector saw the remedy taken
  and judged it not enough) or kept updating it for a whole cooldown after the action (the
  condition outlived the remedy); the cooldown applies either way;
- **sanity**: a scale_lr factor outside [0.01, 10] is not applied, nor an LR-anomaly
  advice to raise an LR that the Actor itself cut;
- **dry run**: ``dry_run=True`` decides exactly as above but changes nothing; it only reports;
- **one Actor per run**: the Monitor owns it and integrations attach to it
  (``Monitor.attach_actor``); it decides once per step, whoever offers the step.

Each decision is an :class:`Outcome` whose :class:`Status` (applied, dry_run, waiting,
cooling_down, capped, refused, failed) is what code reads; its ``reason`` is for people. Bad input
(an ``on_rollback``/``on_stop`` that raises, an optimizer without ``param_groups``, a scheduler
of a class the Actor cannot scale) is one warning on the ``losswatch`` logger: the run goes on and
nothing is done in its place (docs/acting.md).

Every applied (or dry-run) action is reported to the service through
``monitor.report_action(step, action, applied, dry_run)`` so it shows in the run's alerts, in
``losswatch_actions_applied_total`` and as a Grafana annotation.

The module imports nothing heavy: torch is only touched through the optimizer the user passes.

Supported schedulers for ``scale_lr`` (future values stay scaled; checked against torch itself in
tests/test_acting.py): every ``torch.optim.lr_scheduler`` class shipped with torch 2.x —
LambdaLR, MultiplicativeLR, StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR,
PolynomialLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR,
ReduceLROnPlateau, and SequentialLR / ChainedScheduler of those. A subclass of torch's
LRScheduler gets its ``base_lrs`` scaled (the state every torch scheduler keeps), which is right
for any schedule that is proportional to its base LR. A scheduler of any other class is not
scaled, and neither is the LR (see :meth:`Actor._check_scheduler`).
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Actor", "Outcome", "Status", "StopTraining", "SUPPORTED_ACTIONS", "scale_scheduler"]

log = logging.getLogger("losswatch.acting")

SUPPORTED_ACTIONS = ("scale_lr", "clip_grad_norm", "rollback", "stop")


class Status(str, enum.Enum):
    """What the Actor did with one piece of advice (a str, so ``status == "applied"`` reads)."""

    APPLIED = "applied"  # the change was made
    DRY_RUN = "dry_run"  # decided as if applied; nothing changed (``dry_run=True``)
    WAITING = "waiting"  # waits for the alert to be confirmed (a later step, a longer episode)
    COOLING_DOWN = "cooling_down"  # too soon after the last intervention; offered again after it
    CAPPED = "capped"  # the run's cap of interventions is reached
    REFUSED = "refused"  # not something to do: no advice, unsupported, unsafe, already acted on
    FAILED = "failed"  # tried, and the optimizer or the user's function raised: nothing else done


@dataclass(frozen=True)
class Outcome:
    """One decision: at ``step``, ``action`` (a dict) got ``status``, because ``reason``."""

    step: int
    action: dict
    status: Status
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "action": dict(self.action), "status": self.status.value,
                "reason": self.reason}


class StopTraining(Exception):
    """Raised by a plain-loop helper (opt-in) when losswatch asked training to stop."""


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Read a field of an alert/action that may be a dict or a dataclass (detectors.types)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _evidence(alert: Any) -> dict[str, Any]:
    """An alert's evidence dict ({} when it has none or it is not a dict)."""
    ev = _get(alert, "evidence")
    return ev if isinstance(ev, dict) else {}


def _action_dict(action: Any) -> dict[str, Any]:
    """An action as a plain dict ``{"type": ..., **params, "reason": ...}``."""
    if action is None:
        return {"type": "none"}
    if isinstance(action, dict):
        return dict(action)
    to_dict = getattr(action, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise TypeError(f"an action must be a dict or an Action, got {type(action).__name__}")


def _scale_value(container: Any, key: Any, factor: float) -> None:
    """Multiply ``container[key]`` by factor in place (a tensor LR stays the same tensor)."""
    v = container[key]
    if hasattr(v, "mul_"):  # a tensor LR (capturable / fused optimizers): keep its identity
        v.mul_(factor)
    else:
        container[key] = v * factor


def _scale_list_attr(obj: Any, name: str, factor: float) -> None:
    values = getattr(obj, name, None)
    if isinstance(values, list):
        for i in range(len(values)):
            _scale_value(values, i, factor)


def scale_scheduler(scheduler: Any, factor: float) -> None:
    """Scale every LR-valued piece of state a torch scheduler keeps, so that all its future
    values are ``factor`` times what they would have been.

    WHY each field: closed-form schedules (LambdaLR, StepLR's milestone jumps in SequentialLR,
    CosineAnnealingWarmRestarts) recompute from ``base_lrs``; CyclicLR oscillates between
    ``base_lrs`` and ``max_lrs``; cosine schedules approach ``eta_min``; ReduceLROnPlateau floors
    at ``min_lrs``. Scaling all of them makes the new schedule exactly the old one times factor.
    OneCycleLR keeps its state in the param groups (initial_lr, max_lr, min_lr): see
    :meth:`Actor.scale_lr`.
    """
    if scheduler is None:
        return
    for sub in getattr(scheduler, "_schedulers", None) or []:  # SequentialLR, ChainedScheduler
        scale_scheduler(sub, factor)
    _scale_list_attr(scheduler, "base_lrs", factor)
    _scale_list_attr(scheduler, "max_lrs", factor)  # CyclicLR
    _scale_list_attr(scheduler, "min_lrs", factor)  # ReduceLROnPlateau
    _scale_list_attr(scheduler, "_last_lr", factor)  # what get_last_lr() reports
    if isinstance(getattr(scheduler, "eta_min", None), (int, float)):
        scheduler.eta_min = scheduler.eta_min * factor
    if isinstance(getattr(scheduler, "default_min_lr", None), (int, float)):
        scheduler.default_min_lr = scheduler.default_min_lr * factor


def _alert_span(alert: Any) -> int:
    """How many steps of evidence stand behind an alert: its episode's length, or the window the
    detector says its evidence covers (whichever is larger)."""
    if alert is None:
        return 0
    first = _get(alert, "step")
    last = _get(alert, "last_step")
    span = 0
    if isinstance(first, int) and isinstance(last, int):
        span = last - first + 1
    evidence = _evidence(alert)
    for key in ("span_steps", "window", "steps", "n_steps", "over_steps", "consecutive"):
        v = evidence.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            span = max(span, int(v))
    return span


class Actor:
    """Applies losswatch's recommendations to a torch optimizer, with guardrails.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer or None
        The optimizer whose param groups get their LR scaled and whose step gets clipping.
        None: only ``rollback`` and ``stop`` can be applied.
    scheduler : torch LR scheduler or None
        Scaled along with the optimizer so the schedule's future values stay scaled.
    on_rollback : callable(step) or None
        Restores the model (and optimizer) to a checkpoint at or before ``step``. Without it,
        rollback advice is reported but not applied.
    on_stop : callable() or None
        Ends training the framework's way. Without it :attr:`stop_requested` is set (a plain
        loop checks it, or the torch helper raises :class:`StopTraining` when asked to).
    dry_run : bool
        Decide as usual, change nothing, report what would have been done.
    cooldown_steps : int
        Minimum steps between two interventions (default 50: long enough for a scaled LR to show
        its effect on a smoothed loss, short next to a typical run).
    max_actions : int
        Cap on interventions per run (default 5; three 10x cuts already take an LR 1000x down).
    min_persist_steps : int
        An alert whose evidence spans fewer steps waits for confirmation (default 3).
    clip_with_hook : bool
        Install clipping as an ``optimizer.register_step_pre_hook``. Integrations whose framework
        calls ``optimizer.step(closure)`` (Lightning) set False and call :meth:`clip_gradients`
        at the point where gradients are ready.
    monitor : losswatch.client.Monitor or None
        Where applied actions are reported (``report_action``).
    stop_when_no_rollback : bool
        A *critical* alert advising rollback (a NaN loss) with no ``on_rollback`` given: stop
        training instead (default True), since the weights are no longer usable.
    min_factor, max_factor : float
        A scale_lr outside this range (default 0.01..10) is refused: too large a change to make
        unattended.
    restart_on_cut : bool
        With ``on_rollback`` given: an LR cut on a critical alert whose evidence names the last
        good step (``best_step``) also rolls back to it (default True). See
        :meth:`_restart_after_cut`.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=1.0)
    >>> actor = Actor(opt, cooldown_steps=10)
    >>> alert = {"id": "r:divergence:5", "step": 5, "last_step": 9, "kind": "divergence",
    ...          "severity": "critical", "action": {"type": "scale_lr", "factor": 0.1}}
    >>> actor.apply(9, alert["action"], alert).status.value
    'applied'
    >>> opt.param_groups[0]["lr"]
    0.1
    """

    def __init__(
        self,
        optimizer: Any = None,
        scheduler: Any = None,
        on_rollback: Callable[[int], Any] | None = None,
        on_stop: Callable[[], Any] | None = None,
        dry_run: bool = False,
        cooldown_steps: int = 50,
        max_actions: int = 5,
        min_persist_steps: int = 3,
        clip_with_hook: bool = True,
        monitor: Any = None,
        stop_when_no_rollback: bool = True,
        restart_on_cut: bool = True,
        min_factor: float = 0.01,
        max_factor: float = 10.0,
    ) -> None:
        if cooldown_steps < 0 or max_actions < 0 or min_persist_steps < 1:
            raise ValueError("cooldown_steps and max_actions must be >= 0, min_persist_steps >= 1")
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.on_rollback = on_rollback
        self.on_stop = on_stop
        self.dry_run = bool(dry_run)
        self.cooldown_steps = int(cooldown_steps)
        self.max_actions = int(max_actions)
        self.min_persist_steps = int(min_persist_steps)
        # a recommendation confirms a pending one of the same type only this many steps later
        self.confirm_window = max(100, 2 * self.min_persist_steps)
        self.clip_with_hook = bool(clip_with_hook)
        self.monitor = monitor
        self.stop_when_no_rollback = bool(stop_when_no_rollback)
        self.restart_on_cut = bool(restart_on_cut)
        self.min_factor = float(min_factor)
        self.max_factor = float(max_factor)
        self.stop_requested = False
        self.clip_max_norm: float | None = None
        self.lr_scale = 1.0  # product of all LR factors applied so far
        # every decision (bounded: apply() may be called at every step while advice stands)
        self.history: deque[dict[str, Any]] = deque(maxlen=1000)
        self.actions: list[dict[str, Any]] = []  # applied / dry-run ones (at most max_actions)
        self.n_actions = 0
        self._last_action_step: int | None = None
        self._acted_alerts: dict[str, int] = {}  # alert id -> step of the last action on it
        self._acted_level: dict[str, int] = {}  # alert id -> its escalation count when acted on
        self._pending: dict[str, int] = {}  # action type -> step it was first recommended at
        self._clip_hook_handle: Any = None
        self._seen_advice: Any = None  # (alert, advice) last handed to apply() by follow()
        self._retry_at: int | None = None  # follow() re-offers advice held back by a cooldown here
        self._followed_step: int | None = None  # the step follow() last considered advice at
        # why the LR cannot be changed (None when it can), found once, each said in one warning
        self._optimizer_problem = self._check_optimizer()
        self._scheduler_problem = self._check_scheduler()

    # ------------------------------------------------------------------ decisions
    def follow(self, step: int, monitor: Any = None) -> Outcome | None:
        """Consider the monitor's current advice; call once per step, after ``monitor.log``.

        Reads ``monitor.recommendation`` and the active alert that carries it, and calls
        :meth:`apply` when the advice (or its alert) is new, while an earlier one waits for
        confirmation, and once more when a cooldown that held back standing advice ends. Cheap
        when there is no advice (two attribute reads).

        One decision per step: a second call at the same step (the Monitor that owns this Actor
        and an integration attached to it both offer the step) considers nothing.

        Returns the :class:`Outcome` of :meth:`apply`, or None when nothing was considered.
        """
        monitor = monitor if monitor is not None else self.monitor
        advice = getattr(monitor, "recommendation", None)
        if not advice or step == self._followed_step:
            return None
        self._followed_step = step
        alert = _alert_for(monitor, advice)
        key = (_alert_key(alert), repr(sorted(advice.items())) if isinstance(advice, dict) else repr(advice))
        retry = self._retry_at is not None and step >= self._retry_at
        if key == self._seen_advice and not self._pending and not retry:
            return None
        self._seen_advice = key
        self._retry_at = None
        outcome = self.apply(step, advice, alert)
        if outcome.status is Status.COOLING_DOWN:
            # standing advice that arrived during a cooldown is offered again when it ends
            self._retry_at = self._last_action_step + self.cooldown_steps
        return outcome

    def fill_in(self, optimizer: Any = None, scheduler: Any = None, on_rollback: Callable | None = None,
                on_stop: Callable | None = None) -> None:
        """Take the parts this Actor lacks (None) from a second party asked to act on the same
        run; the parts it has stay."""
        if self.optimizer is None and optimizer is not None:
            self.optimizer = optimizer
            self._optimizer_problem = self._check_optimizer()
        if self.scheduler is None and scheduler is not None:
            self.scheduler = scheduler
            self._scheduler_problem = self._check_scheduler()
        if self.on_rollback is None:
            self.on_rollback = on_rollback
        if self.on_stop is None:
            self.on_stop = on_stop

    def offer_again_at(self, step: int) -> int | None:
        """From which step :meth:`follow` should be offered the standing advice again: ``step``
        (any later call) while some advice waits for confirmation, the end of the cooldown when
        one held it back, None when nothing waits (new advice is offered when it arrives)."""
        if self._pending:
            return step
        return self._retry_at

    def apply(self, step: int, action: Any, alert: Any = None) -> Outcome:
        """Consider one recommendation at ``step``; apply it if the guardrails allow.

        Returns
        -------
        Outcome
            Its :class:`Status` says what happened and ``reason`` why; also appended to
            :attr:`history`. Never raises: a bad recommendation is refused, an effect that raises
            (the user's ``on_rollback``, an optimizer) is one warning and a ``failed`` outcome.
        """
        try:
            act = _action_dict(action)
        except TypeError as exc:
            return self._record(step, {"type": "none"}, Status.REFUSED, str(exc))
        kind = act.get("type", "none")
        alert_id = _get(alert, "id")
        if kind in (None, "none"):
            return self._record(step, act, Status.REFUSED, "no action recommended")
        if (kind == "rollback" and self.on_rollback is None and self.stop_when_no_rollback
                and _get(alert, "severity") == "critical"):
            # the weights are unusable (NaN, a divergence past saving) and there is no checkpoint
            # to return to: going on burns compute on garbage, so end training cleanly instead
            act = {"type": "stop", "reason": f"rollback to step {act.get('to_step')} was advised but no "
                   f"on_rollback function was given, so training stops instead. {act.get('reason', '')}".strip()}
            kind = "stop"
        if kind not in SUPPORTED_ACTIONS:
            return self._record(step, act, Status.REFUSED, f"action {kind!r} is not something the Actor can do")
        why_not = self._unsupported_reason(act) or self._undoes_own_cut(act, alert)
        if why_not:
            return self._record(step, act, Status.REFUSED, why_not)
        if alert_id is not None and alert_id in self._acted_alerts and not self._escalated(alert) \
                and not self._persists(alert, step):
            return self._record(step, act, Status.REFUSED, f"already acted on alert {alert_id}")
        if self.n_actions >= self.max_actions:
            return self._record(step, act, Status.CAPPED, f"cap of {self.max_actions} actions reached")
        if self._last_action_step is not None and step - self._last_action_step < self.cooldown_steps:
            return self._record(
                step, act, Status.COOLING_DOWN,
                f"cooldown: last action at step {self._last_action_step}, next allowed at "
                f"{self._last_action_step + self.cooldown_steps}",
            )
        if not self._confirmed(step, kind, alert):
            self._pending.setdefault(kind, step)
            return self._record(step, act, Status.WAITING, "waiting for the next step to confirm the alert")
        self._pending.pop(kind, None)
        if alert_id is not None:
            self._acted_alerts[alert_id] = step
            self._acted_level[alert_id] = _escalation(alert)
        self.n_actions += 1
        self._last_action_step = step
        if self.dry_run:
            outcome = self._record(step, act, Status.DRY_RUN, "dry run: nothing changed")
        else:
            try:
                detail = self._do(step, act)
            except Exception as exc:  # acting must never crash training
                return self._failed(step, act, exc)
            outcome = self._record(step, act, Status.APPLIED, detail)
        self._report(step, act, applied=not self.dry_run)
        self._restart_after_cut(step, act, alert)
        return outcome

    def _escalated(self, alert: Any) -> bool:
        """The detector escalated the alert since the Actor last acted on it: new advice."""
        return _escalation(alert) > self._acted_level.get(_get(alert, "id"), 0)

    def _persists(self, alert: Any, step: int) -> bool:
        """An episode already acted on may be acted on again only if the detector kept updating
        it for a whole cooldown after the action: the condition outlived the remedy.

        WHY not "still open": detectors close an episode only well after the run recovered (the
        benchmark's divergence episodes stayed open ~300 steps after a successful cut), so acting
        on every still-open episode cut healthy LRs again and again (closed-loop bench: 4 of 15
        rescued runs lost that way)."""
        acted = self._acted_alerts.get(_get(alert, "id"), step)
        last = _get(alert, "last_step")
        return (_get(alert, "resolved_step") is None and isinstance(last, int)
                and last >= acted + self.cooldown_steps and step - acted >= self.cooldown_steps)

    def _restart_after_cut(self, step: int, act: dict[str, Any], alert: Any) -> None:
        """A cut LR on a critical alert that names the last good step, or on any alert whose
        evidence names a ``restart_step``, also restores that step.

        WHY: a run that blew up carries damaged weights (saturated units, huge Adam moments); the
        detectors' own advice is "cut the LR, roll back to a checkpoint near step s". With an
        ``on_rollback`` given (and ``restart_on_cut``) the Actor does both at once: restart from
        the last good state at the lower LR, which is what a person would do.
        """
        if not (self.restart_on_cut and self.on_rollback is not None and act["type"] == "scale_lr"
                and float(act["factor"]) < 1):
            return
        evidence = _evidence(alert)
        # ``restart_step`` is the detector asking for a restart at any severity (a run stuck
        # early: the cut alone leaves the weights in the flat region); otherwise only a critical
        # alert's last good step counts
        keys = ("restart_step",) if _get(alert, "severity") != "critical" else \
            ("restart_step", "best_step", "last_finite_step")
        good = None
        for key in keys:
            v = evidence.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < step:
                good = v
                break
        if good is None:
            return
        why = "the loss blew up" if key != "restart_step" else "training got stuck"
        rollback = {"type": "rollback", "to_step": good,
                    "reason": f"the LR was cut because {why}; restarting from step {good}, "
                              f"the state the detector named, at the lower LR"}
        if self.dry_run:
            self._record(step, rollback, Status.DRY_RUN, "dry run: nothing changed")
        else:
            try:
                detail = self._do(step, rollback)
            except Exception as exc:
                self._failed(step, rollback, exc)
                return
            self._record(step, rollback, Status.APPLIED, detail)
        self._report(step, rollback, applied=not self.dry_run)

    def _confirmed(self, step: int, kind: str, alert: Any) -> bool:
        """True when the advice is not the reaction to one noisy step."""
        if _get(alert, "kind") == "nan":
            return True
        if _alert_span(alert) >= self.min_persist_steps:
            return True
        first = self._pending.get(kind)
        if first is not None and step - first > self.confirm_window:
            self._pending[kind] = step  # too old to confirm anything: start over
            return False
        return first is not None and step > first

    def _undoes_own_cut(self, act: dict[str, Any], alert: Any) -> str | None:
        """The detectors see the Actor's own LR cut as an LR anomaly (an unplanned drop) and may
        advise raising the LR back; obeying would undo the rescue, so such advice is refused."""
        if (act["type"] == "scale_lr" and _get(alert, "kind") == "lr_anomaly" and self.lr_scale < 1
                and isinstance(act.get("factor"), (int, float)) and act["factor"] > 1):
            return f"the LR change flagged is losswatch's own cut (x{self.lr_scale:.3g}); not undone"
        return None

    def _unsupported_reason(self, act: dict[str, Any]) -> str | None:
        kind = act["type"]
        if kind == "scale_lr":
            f = act.get("factor")
            if not isinstance(f, (int, float)) or isinstance(f, bool) or not math.isfinite(f) or f <= 0:
                return f"scale_lr needs a finite positive factor, got {f!r}"
            if not self.min_factor <= f <= self.max_factor:
                return (f"scale_lr factor {f:g} is outside [{self.min_factor:g}, {self.max_factor:g}]: "
                        f"too large a change to make unattended")
            if self.optimizer is None:
                return "no optimizer to scale"
            if self._optimizer_problem or self._scheduler_problem:
                return self._optimizer_problem or self._scheduler_problem
        elif kind == "clip_grad_norm":
            m = act.get("max_norm")
            if not isinstance(m, (int, float)) or isinstance(m, bool) or not math.isfinite(m) or m <= 0:
                return f"clip_grad_norm needs a finite positive max_norm, got {m!r}"
            if self.optimizer is None:
                return "no optimizer to clip"
            if self._optimizer_problem:
                return self._optimizer_problem
        elif kind == "rollback":
            if self.on_rollback is None:
                return "rollback advised but no on_rollback function was given"
            if not isinstance(act.get("to_step"), int):
                return f"rollback needs an integer to_step, got {act.get('to_step')!r}"
        return None

    # ------------------------------------------------------------------ effects
    def _do(self, step: int, act: dict[str, Any]) -> str:
        kind = act["type"]
        if kind == "scale_lr":
            self.scale_lr(float(act["factor"]))
            return f"LR scaled by {act['factor']} (now {self.current_lr():.3g})"
        if kind == "clip_grad_norm":
            self.install_clipping(float(act["max_norm"]))
            return f"gradients clipped at norm {act['max_norm']}"
        if kind == "rollback":
            self.on_rollback(int(act["to_step"]))  # type: ignore[misc]
            self._drop_gradients()
            return f"rolled back to step {act['to_step']}"
        # stop: the user's on_stop first, so that one that raises leaves the run going as it was
        if self.on_stop is not None:
            self.on_stop()
        self.stop_requested = True
        return "training asked to stop"

    def _drop_gradients(self) -> None:
        """Forget the gradients of the step in flight after a rollback.

        WHY: the Actor runs between ``backward()`` and ``optimizer.step()``; the gradients
        already computed belong to the blown-up weights that were just discarded. Applied to
        the restored weights they are one huge step that breaks them again (closed-loop bench:
        digits at 30x LR restored step 0 and was back at loss 13 for ~80 steps). With the
        gradients set to None, torch optimizers skip this one step.
        """
        if self.optimizer is None or self._optimizer_problem:
            return  # not a torch optimizer: its gradients are not ours to touch
        try:
            self.optimizer.zero_grad(set_to_none=True)
        except Exception as exc:  # acting must never crash training
            log.warning("losswatch could not clear the gradients after a rollback: %s", exc)

    def current_lr(self) -> float:
        """The first param group's LR as a float (nan without an optimizer)."""
        if self.optimizer is None or not self.optimizer.param_groups:
            return float("nan")
        return float(self.optimizer.param_groups[0]["lr"])

    def scale_lr(self, factor: float) -> None:
        """Scale every param group's LR now and the scheduler's future values (see module doc)."""
        for group in self.optimizer.param_groups:
            _scale_value(group, "lr", factor)
            # OneCycleLR computes from these group fields; initial_lr is also what a scheduler
            # created later (or re-created on resume) takes as its base.
            for key in ("initial_lr", "max_lr", "min_lr"):
                if key in group and group[key] is not None:
                    _scale_value(group, key, factor)
        scale_scheduler(self.scheduler, factor)
        self.lr_scale *= factor

    def install_clipping(self, max_norm: float) -> None:
        """Clip the global grad-norm at ``max_norm`` before every optimizer step from now on."""
        self.clip_max_norm = max_norm
        if self.clip_with_hook and self._clip_hook_handle is None:
            self._clip_hook_handle = self.optimizer.register_step_pre_hook(self._clip_pre_hook)

    def _clip_pre_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.clip_gradients()

    def clip_gradients(self) -> None:
        """Clip the optimizer's gradients at the installed max_norm (no-op when none installed).

        One fused reduction and one fused scale (``clip_grad_norm_`` with foreach), no host sync.
        """
        if self.clip_max_norm is None or self.optimizer is None:
            return
        import torch  # lazily: the Actor is only ever used next to a torch optimizer

        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, self.clip_max_norm, foreach=True)

    def close(self) -> None:
        """Remove the clipping hook (if installed)."""
        if self._clip_hook_handle is not None:
            self._clip_hook_handle.remove()
            self._clip_hook_handle = None

    # ------------------------------------------------------------------ bookkeeping
    def _record(self, step: int, act: dict[str, Any], status: Status, reason: str) -> Outcome:
        outcome = Outcome(step, act, status, reason)
        self.history.append(outcome)
        if status is Status.APPLIED or status is Status.DRY_RUN:
            self.actions.append(outcome)
            log.warning("losswatch %s at step %d: %s (%s)", status.value.replace("_", " "), step, act, reason)
        return outcome

    def _failed(self, step: int, act: dict[str, Any], exc: BaseException) -> Outcome:
        """An effect raised (the user's on_rollback or on_stop, an optimizer): one warning, the run
        goes on, and nothing else is done in its place (no stop instead of a rollback)."""
        what = {"rollback": "your on_rollback", "stop": "your on_stop"}.get(act["type"], f"{act['type']}")
        reason = f"{what} raised {exc!r}; nothing else was changed and training goes on"
        log.warning("losswatch at step %d: %s", step, reason)
        return self._record(step, act, Status.FAILED, reason)

    def _check_optimizer(self) -> str | None:
        """Why this optimizer's LR cannot be scaled (None when it can): one warning, at once."""
        opt = self.optimizer
        if opt is None or isinstance(getattr(opt, "param_groups", None), (list, tuple)):
            return None
        reason = (f"the optimizer ({type(opt).__name__}) has no param_groups: losswatch cannot change "
                  f"its LR or clip its gradients (rollback and stop still work)")
        log.warning("losswatch: %s", reason)
        return reason

    def _check_scheduler(self) -> str | None:
        """Why the scheduler's future LRs cannot be scaled with the optimizer's (None when they
        can): one warning, at once. WHY refuse rather than scale the optimizer alone: the next
        ``scheduler.step()`` would overwrite the cut, so the run would go on at the old LR while
        losswatch reported it cut."""
        sched = self.scheduler
        if sched is None:
            return None
        try:
            from torch.optim import lr_scheduler as tls
        except ImportError:
            known: tuple = ()
        else:
            known = tuple(c for c in (getattr(tls, "LRScheduler", None), getattr(tls, "_LRScheduler", None),
                                      getattr(tls, "ReduceLROnPlateau", None)) if c is not None)
        inner = sched
        while known and not isinstance(inner, known) and hasattr(inner, "scheduler"):
            inner = inner.scheduler  # a wrapper (accelerate's AcceleratedScheduler) around a torch one
        if known and isinstance(inner, known):
            self.scheduler = inner  # its state is what a cut must scale
            return None
        reason = (f"the scheduler ({type(sched).__name__}) is not a torch.optim.lr_scheduler one: "
                  f"losswatch cannot scale its future LRs, so it does not cut the LR at all (its next "
                  f"step would undo the cut); cut it in your code when advised")
        log.warning("losswatch: %s", reason)
        return reason

    def _report(self, step: int, act: dict[str, Any], applied: bool) -> None:
        report = getattr(self.monitor, "report_action", None)
        if report is None:
            return
        try:
            report(step, act, applied, self.dry_run)
        except Exception as exc:  # reporting is best effort; training goes on
            log.warning("losswatch could not report an action: %s", exc)



def _escalation(alert: Any) -> int:
    """How many times the detector escalated this alert's advice (``evidence["escalation"]``)."""
    v = _evidence(alert).get("escalation", 0)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _alert_key(alert: Any) -> Any:
    """What makes an alert 'new' for follow(): its id and how far its episode has got."""
    if alert is None:
        return None
    return (_get(alert, "id"), _get(alert, "last_step"), _get(alert, "severity"))


def _alert_for(monitor: Any, advice: Any) -> Any:
    """The active alert whose action is the current advice (most recent first), if any."""
    alerts = getattr(monitor, "alerts", None) or []
    adv_type = _get(advice, "type")
    for alert in reversed(list(alerts)):
        if _get(alert, "resolved_step") is not None:
            continue
        if _get(_get(alert, "action"), "type") == adv_type:
            return alert
    return None
