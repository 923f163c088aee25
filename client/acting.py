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

Act, then verify, then escalate: each applied action is watched for a verification window
(:mod:`.verification`: 50 records and 200 steps, whichever comes later) and gets a verdict,
``verified`` or ``failed``; a failed one climbs its condition's ladder (:mod:`.ladder`, the one
table: NaN skip -> rollback -> stop; divergence cut -> rollback and cut -> stop; LR too low raise
-> stop raising), bounded per incident and per run. A rollback goes to the latest checkpoint
recorded before the incident began (:mod:`.checkpoints`, ``Monitor.checkpoint``).

Each decision is an :class:`Outcome` whose :class:`Status` (applied, dry_run, waiting,
cooling_down, capped, refused, failed) is what code reads; its ``reason`` is for people, its
``evidence`` says what it rested on, and a verdict is an Outcome with ``verdict`` set. Bad input
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
import inspect
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from . import ladder
from .checkpoints import Checkpoints
from .verification import Check, RunLevels, Verdict, judge

__all__ = ["SUPPORTED_ACTIONS", "Actor", "Outcome", "Status", "StopTraining", "Verdict", "scale_scheduler"]

log = logging.getLogger("losswatch.acting")

SUPPORTED_ACTIONS = ("scale_lr", "clip_grad_norm", "rollback", "skip_batch", "stop")


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
    """One decision: at ``step``, ``action`` (a dict) got ``status``, because ``reason``.

    ``evidence``: what the decision rested on (alert id, incident id, event, the loss and
    grad-norm levels before the incident, the ladder's rung). ``verdict``: set on the outcome that
    closes an applied action's verification window (``"verified"`` or ``"failed"``)."""

    step: int
    action: dict
    status: Status
    reason: str
    evidence: dict = field(default_factory=dict)
    verdict: Verdict | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"step": self.step, "action": dict(self.action), "status": self.status.value,
             "reason": self.reason, "evidence": dict(self.evidence)}
        if self.verdict is not None:
            d["verdict"] = self.verdict.value
        return d


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
    on_rollback : callable(step, checkpoint), callable(step), or None
        Restores the model (and optimizer, scheduler, data position) from ``checkpoint``, the
        token recorded with the checkpoint of ``step`` (None when no checkpoint was recorded: then
        restore a state at or before ``step`` yourself). The one-argument form gets the step
        only. Without it, rollback advice is reported but not applied.
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
    checkpoints : Checkpoints or None
        Where rollbacks find their checkpoint (default: the monitor's, ``Monitor.checkpoints``).
    verify_records, verify_steps : int
        The verification window after an applied action: this many records and this many
        steps, whichever comes later (default 50 and 200).
    max_attempts_per_incident : int
        Rungs of the ladder tried per incident (default 3, the longest ladder).
    min_lr_fraction : float
        A cut never takes the LR below this fraction of the run's peak LR (default 1/1000).
    max_raise : float
        LR raises multiply to at most this in all (default 100).
    restart_on_cut : bool
        With ``on_rollback`` given: an LR cut on a critical alert whose evidence names the last
        good step (``best_step``) also rolls back to it (default True). See
        :meth:`_restart_target`.

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
        checkpoints: Checkpoints | None = None,
        verify_records: int = 50,
        verify_steps: int = 200,
        max_attempts_per_incident: int = 3,
        min_lr_fraction: float = 1e-3,
        max_raise: float = 100.0,
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
        # act, then verify, then escalate (client/ladder.py, client/verification.py)
        if checkpoints is None:
            checkpoints = getattr(monitor, "checkpoints", None)
        self.checkpoints: Checkpoints = checkpoints if isinstance(checkpoints, Checkpoints) else Checkpoints()
        self.levels = RunLevels()  # fed by observe(): the Monitor's background thread, or your loop
        self.verify_records = int(verify_records)
        self.verify_steps = int(verify_steps)
        self.max_attempts_per_incident = int(max_attempts_per_incident)
        self.min_lr_fraction = float(min_lr_fraction)
        self.max_raise = float(max_raise)
        self.verdicts: list[Outcome] = []  # the outcomes that closed a verification window
        self._incidents: dict[str, _Incident] = {}
        self._checks: list[Check] = []  # applied actions waiting for their verdict
        self._recovered: dict[str, tuple[_Incident, int]] = {}  # condition -> (incident, verdict step)
        self._peak_lr_seen = 0.0  # the LR the optimizer had at a decision, for tests without records
        self._raise_total = 1.0  # product of the raises applied
        self._raises_stopped = False
        self._rollback_arity = _arity(on_rollback)
        # in a multi-rank job (client/distributed.py): rank 0's Actor decides and hands each change
        # to this DecisionSync, which has every rank make it at the same step; the others never decide
        self.shared: Any = None

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
        if step == self._followed_step or (self.shared is not None and not self.shared.decides):
            return None
        if self._checks:
            escalated = self.verify(step)
            if escalated is not None:
                self._followed_step = step  # one decision per step: the escalation was this step's
                return escalated
        advice = getattr(monitor, "recommendation", None)
        if not advice:
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
            self._rollback_arity = _arity(on_rollback)
        if self.on_stop is None:
            self.on_stop = on_stop

    def offer_again_at(self, step: int) -> int | None:
        """From which step :meth:`follow` should be offered the standing advice again: ``step``
        (any later call) while some advice waits for confirmation, the end of the cooldown when
        one held it back, None when nothing waits (new advice is offered when it arrives)."""
        if self._pending:
            return step
        return self._retry_at

    @property
    def verifying(self) -> bool:
        """An applied action is in its verification window (follow() should be offered each step)."""
        return bool(self._checks)

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
        if self.shared is not None and not self.shared.decides:
            return self._record(step, act, Status.REFUSED, "in a multi-rank job only rank 0 decides (and only "
                                                           "while it reaches the other ranks)")
        if kind in (None, "none"):
            return self._record(step, act, Status.REFUSED, "no action recommended")
        # a NaN seen on its own step first skips its batch (the ladder's first rung needs no
        # on_rollback; its second, a rollback that cannot be made, becomes the stop below)
        skips_first = (kind == "rollback" and _get(alert, "kind") == "nan" and _get(alert, "step") == step
                       and self.optimizer is not None and not self._optimizer_problem)
        if (kind == "rollback" and self.on_rollback is None and self.stop_when_no_rollback
                and _get(alert, "severity") == "critical" and not skips_first):
            # the weights are unusable (NaN, a divergence past saving) and there is no checkpoint
            # to return to: going on burns compute on garbage, so end training cleanly instead
            act = {"type": "stop", "reason": f"rollback to step {act.get('to_step')} was advised but no "
                   f"on_rollback function was given, so training stops instead. {act.get('reason', '')}".strip()}
            kind = "stop"
        if kind not in SUPPORTED_ACTIONS:
            return self._record(step, act, Status.REFUSED, f"action {kind!r} is not something the Actor can do")
        why_not = (None if skips_first else self._unsupported_reason(act)) or self._undoes_own_cut(act, alert)
        if why_not:
            return self._record(step, act, Status.REFUSED, why_not)
        if _get(alert, "resolved_step") is not None:
            return self._record(step, act, Status.REFUSED,
                                f"not acted on: alert {alert_id} resolved at step {_get(alert, 'resolved_step')}")
        cur = self.current_lr() if self.optimizer is not None and not self._optimizer_problem else math.nan
        if math.isfinite(cur) and cur > self._peak_lr_seen:
            self._peak_lr_seen = cur
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
        condition = ladder.condition_of(alert, act)
        incident = self._incident(alert, step, condition) if condition is not None else None
        if incident is not None:
            why_not = self._contradicted(incident, act)
            if why_not:
                return self._record(step, act, Status.REFUSED, why_not, self._evidence(incident, alert))
        if alert_id is not None:
            self._acted_alerts[alert_id] = step
            self._acted_level[alert_id] = _escalation(alert)
        if incident is None:  # a one-off action (a stop): no ladder, nothing to verify
            self.n_actions += 1
            self._last_action_step = step
            outcome = self._effect(step, act, {"alert": alert_id})
            if outcome.status is Status.APPLIED and act["type"] == "stop":
                self._close(step, outcome, Verdict.VERIFIED, "training was asked to stop")
            return outcome
        if incident.attempts > 0:
            # acted on before, and the detector escalated or kept the alert going: that action failed
            self._fail_checks_of(step, incident, "the detector escalated the alert (or kept it open) "
                                                 "after the action")
            return self._climb(step, incident, incident.rung + 1, act, alert)
        return self._climb(step, incident, ladder.first_rung(condition, alert, step), act, alert)

    # ------------------------------------------------------------------ the ladder
    def _incident(self, alert: Any, step: int, condition: str) -> _Incident:
        """The incident an alert belongs to (``alert["incident"]``, else its id); a new incident of
        a condition that recovered within the last verification window continues that one's ladder
        (a relapse counts)."""
        iid = _get(alert, "incident") or _get(alert, "id") or f"{condition}@{step}"
        first = _get(alert, "step")
        first = first if isinstance(first, int) and not isinstance(first, bool) and first <= step else step
        inc = self._incidents.get(iid)
        if inc is None:
            recovered = self._recovered.get(condition)
            if recovered is not None and step - recovered[1] <= self.verify_steps:
                inc = recovered[0]
                inc.relapses += 1
                log.warning("losswatch: %s at step %d is a relapse of incident %s (recovered at step %d): "
                            "it continues that incident's ladder", iid, step, inc.id, recovered[1])
            else:
                pre_loss, pre_gn = self.levels.level_before(first)
                if pre_loss is None:
                    # no records seen before the incident (the Actor is built at the first advice):
                    # the detectors' own level before it, when the alert carries one
                    best = _get(_get(alert, "evidence"), "best")
                    if isinstance(best, (int, float)) and not isinstance(best, bool) and math.isfinite(best):
                        pre_loss = float(best)
                inc = _Incident(iid, condition, first, _get(alert, "id"), _get(alert, "event"), pre_loss, pre_gn)
            self._incidents[iid] = inc
        elif first < inc.first_step:
            inc.first_step = first
        return inc

    def _contradicted(self, inc: _Incident, act: dict[str, Any]) -> str | None:
        """The data has since contradicted the verdict: the run-away is over and the loss is back
        under its level before the incident (a cut or a rollback would only throw progress away).

        The run-away must be in the records the Actor saw: a non-finite loss (nan), or a level
        (median of 5 records) at least 1.5x the level before (divergence); noise is neither."""
        if inc.condition == ladder.LR_TOO_LOW or inc.pre_loss is None or inc.attempts > 0:
            return None
        since = [r[2] for r in self.levels.since(inc.first_step) if r[2] is not None]
        recent = since[-5:]
        finite = [v for v in since if isinstance(v, (int, float)) and math.isfinite(v)]
        if len(recent) < 5 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in recent):
            return None  # too few records since, or still non-finite: nothing contradicts the alert
        if inc.condition == ladder.NAN:
            ran_away = len(finite) < len(since)
        else:
            levels = [sorted(since[k:k + 5])[2] for k in range(len(since) - 4)]
            ran_away = bool(levels) and max(levels) >= 1.5 * inc.pre_loss
        now = sorted(recent)[2]
        if ran_away and now <= inc.pre_loss:
            return (f"not acted on: the data contradicts the alert: the loss ran away and is back at {now:.4g}, "
                    f"under its level before the incident ({inc.pre_loss:.4g})")
        return None

    def _climb(self, step: int, inc: _Incident, rung: int, advice: dict[str, Any], alert: Any) -> Outcome:
        """Apply rung ``rung`` of the incident's ladder (client/ladder.py) and start its check."""
        name = ladder.rung_name(inc.condition, rung)
        evidence = self._evidence(inc, alert, rung=name)
        if name is None:
            return self._record(step, advice, Status.CAPPED, f"incident {inc.id}: its ladder is exhausted", evidence)
        if inc.attempts >= self.max_attempts_per_incident:
            return self._record(step, advice, Status.CAPPED,
                                f"incident {inc.id}: {inc.attempts} attempts, the cap per incident", evidence)
        if self.n_actions >= self.max_actions and name != ladder.STOP:
            return self._record(step, advice, Status.CAPPED, f"cap of {self.max_actions} actions reached", evidence)
        target = self._restart_target(step, advice, alert, inc) if name == ladder.ADVICE else None
        restart = (name == ladder.ROLLBACK_AND_CUT and self.on_rollback is not None) or target is not None
        acts = [a for a in (self._rung_action(what, inc, advice, restart) for what in ladder.RUNG_ACTIONS[name])
                if a is not None]
        if target is not None and acts:
            # "cut the LR and restart from the last good state": the rollback first, so that an
            # on_rollback that restores the optimizer and scheduler in full does not undo the cut
            good, why = target
            acts.insert(0, {"type": "rollback", "to_step": good,
                            "reason": f"the LR is cut because {why}; restarting from step {good}, the state "
                                      f"the detector named, at the lower LR"})
        if not acts and name != ladder.STOP_RAISING:
            return self._record(step, advice, Status.REFUSED, _NOTHING_LEFT, evidence)
        if self.on_rollback is None and any(a["type"] == "rollback" for a in acts):
            if len(acts) > 1:  # "roll back and cut" with nothing to roll back with: the cut alone
                acts = [a for a in acts if a["type"] != "rollback"]
            elif self.stop_when_no_rollback and (alert is None or _get(alert, "severity") == "critical"):
                # a rollback that cannot be made where one is needed (a NaN loss: the weights are
                # unusable; or an earlier rung failed): the next rung, a stop
                return self._climb(step, inc, rung + 1, advice, alert)
        if [a["type"] for a in acts] == ["skip_batch"] and self._unsupported_reason(acts[0]):
            return self._climb(step, inc, rung + 1, advice, alert)  # no optimizer to skip a step of
        for act in acts:
            why_not = self._unsupported_reason(act)
            if why_not:
                return self._record(step, act, Status.REFUSED, why_not, evidence)
        inc.rung = rung
        inc.attempts += 1
        self.n_actions += 1
        self._last_action_step = step
        if name == ladder.STOP_RAISING:
            self._raises_stopped = True
            act = {"type": "none", "reason": "the raise did not help: no further LR raise on this run"}
            outcome = self._record(step, act, Status.APPLIED, "no further LR raise on this run", evidence)
            self._report(step, act, applied=not self.dry_run, evidence=evidence)
            return outcome
        main: Outcome | None = None
        for act in acts:
            outcome = self._effect(step, act, evidence)
            if outcome.status is Status.FAILED and act["type"] == "rollback" and outcome.evidence.get("no_checkpoint"):
                # no checkpoint to go back to: the ladder's next rung, said, never silently
                return self._climb(step, inc, rung + 1, advice, alert)
            if main is None or outcome.status is not Status.APPLIED or main.action["type"] == "rollback":
                main = outcome  # the cut, when a rung both rolls back and cuts: what is verified
            if outcome.status is not Status.APPLIED:
                break
        if main is None:
            return self._record(step, advice, Status.REFUSED, _NOTHING_LEFT, evidence)
        if main.status is Status.APPLIED:
            if main.action["type"] == "stop":
                self._close(step, main, Verdict.VERIFIED, "training was asked to stop")
            else:
                pre_loss, pre_gn = inc.pre_loss, inc.pre_gn
                self._checks = [c for c in self._checks if c.incident != inc.id]
                self._checks.append(Check(inc.id, inc.condition, rung, main.action, step, self.levels.seq,
                                          pre_loss, pre_gn, self.levels.level_now(), evidence))
        return main

    def _rung_action(self, what: str, inc: _Incident, advice: dict[str, Any],
                     restart: bool = False) -> dict[str, Any] | None:
        """The action dict one part of a rung stands for (None: nothing to do, e.g. at the LR floor)."""
        if what == "advice":
            act = dict(advice)
        elif what == "skip_batch":
            act = {"type": "skip_batch", "reason": f"skip the batch of step in flight ({inc.condition})"}
        elif what == "rollback":
            to = max(0, inc.first_step - 1)  # the latest checkpoint before the incident began
            named = advice.get("to_step") if advice.get("type") == "rollback" else None
            if isinstance(named, int) and not isinstance(named, bool) and 0 <= named < to:
                to = named  # the detector names an earlier good step (the last finite loss)
            act = {"type": "rollback", "to_step": to,
                   "reason": f"the earlier remedy did not work: back to the last checkpoint before incident "
                             f"{inc.id} began (step {inc.first_step})"}
        elif what == "scale_lr":
            f = advice.get("factor") if advice.get("type") == "scale_lr" else None
            f = f if isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1 else ladder.CUT_FACTOR
            act = {"type": "scale_lr", "factor": f, "reason": "the earlier remedy did not work: cut the LR again"}
        else:
            act = {"type": what}
        if act["type"] == "scale_lr":
            return self._bounded(act, restart)
        return act

    def _bounded(self, act: dict[str, Any], restart: bool = False) -> dict[str, Any] | None:
        """A cut never below 1/1000 of the run's peak LR nor below the lowest LR at which the run
        made progress; a raise never past ``max_raise`` in all. Clamped, or None when no room.

        ``restart``: the cut comes with a rollback to before the incident. The progress floor then
        does not apply: that progress was made by weights the rollback discards (a run that
        dropped fast at a large LR and then stalled made its "progress" at the very LR that
        stalled it); the 1/1000 floor still does."""
        f = act.get("factor")
        if not isinstance(f, (int, float)) or isinstance(f, bool) or self.optimizer is None or self._optimizer_problem:
            return act  # refused later with its reason
        lr = self.current_lr()
        if not (math.isfinite(lr) and lr > 0):
            return act
        if f < 1:
            peak = max(self.levels.peak_lr, self._peak_lr_seen, lr)
            floor = peak * self.min_lr_fraction
            lowest = None if restart else self.levels.lowest_progress_lr
            if lowest is not None:
                floor = max(floor, lowest)
            if lr * f >= floor:
                return act
            g = floor / lr
            if g >= 0.999:
                return None
            return dict(act, factor=g, reason=f"{act.get('reason', '')} (bounded: not below {floor:.3g})".strip())
        if self._raises_stopped:
            return None
        room = self.max_raise / self._raise_total
        if f <= room:
            return act
        if room <= 1.001:
            return None
        return dict(act, factor=room, reason=f"{act.get('reason', '')} (bounded: x{self.max_raise:g} in all)".strip())

    def _effect(self, step: int, act: dict[str, Any], evidence: dict[str, Any]) -> Outcome:
        """Make one change (or decide it, in dry run), record and report it."""
        if self.dry_run:
            outcome = self._record(step, act, Status.DRY_RUN, "dry run: nothing changed", evidence)
        else:
            try:
                if self.shared is None:
                    detail = self._do(step, act)
                else:  # made later on every rank; a rollback with no checkpoint to go to fails now
                    if act["type"] == "rollback":
                        self._checkpoint_for(int(act["to_step"]))
                    detail = self.shared.defer(step, act)
            except _NoCheckpoint as exc:
                log.warning("losswatch at step %d: %s", step, exc)
                return self._record(step, act, Status.FAILED, str(exc), dict(evidence, no_checkpoint=True))
            except Exception as exc:  # acting must never crash training
                return self._failed(step, act, exc, evidence)
            outcome = self._record(step, act, Status.APPLIED, detail, evidence)
        self._report(step, act, applied=not self.dry_run, evidence=evidence)
        return outcome

    def _evidence(self, inc: _Incident | None, alert: Any, **more: Any) -> dict[str, Any]:
        ev = {"alert": _get(alert, "id"), "event": _get(alert, "event")}
        if inc is not None:
            ev.update(incident=inc.id, condition=inc.condition, incident_step=inc.first_step,
                      loss_before=inc.pre_loss, grad_norm_before=inc.pre_gn, attempt=inc.attempts + 1)
            if inc.relapses:
                ev["relapses"] = inc.relapses
        ev.update(more)
        return ev

    # ------------------------------------------------------------------ verification
    def observe(self, records: list[dict[str, Any]]) -> None:
        """Feed the run's records (dicts with step, loss, grad_norm, lr): what verification reads.
        The Monitor calls it from its background thread; a loop without one calls it per step."""
        self.levels.observe(records)

    def finish(self) -> None:
        """The run ended: judge every action still in its window on the records it has (no
        escalation), so that each applied action ends verified or failed."""
        for check in list(self._checks):
            verdict, why = judge(check, self.levels, 0, 0)
            if verdict is None:
                verdict, why = Verdict.FAILED, "the run ended before any record followed the action"
            self._checks.remove(check)
            last = self.levels.last_step()
            self._close(last if last is not None else check.step,
                        Outcome(check.step, check.action, Status.APPLIED, why, check.evidence), verdict,
                        f"{why} (judged when the run ended, before its window was over)")

    def note_nonfinite(self, step: int) -> None:
        """A non-finite loss seen in the training thread (``Monitor.log`` on a float): the actions
        in their window failed, judged at the next :meth:`verify` without waiting for the
        background thread's records."""
        for check in self._checks:
            if check.failed_early is None:
                check.failed_early = f"the loss was non-finite again at step {step}"

    def verify(self, step: int) -> Outcome | None:
        """Judge the applied actions whose verification window has passed; climb the ladder of
        each that failed. Returns the escalation's outcome, if any (follow() calls this)."""
        escalation = None
        for check in list(self._checks):
            verdict, why = judge(check, self.levels, self.verify_records, self.verify_steps)
            if verdict is None:
                continue
            self._checks.remove(check)
            inc = self._incidents.get(check.incident)
            outcome = Outcome(check.step, check.action, Status.APPLIED, why, check.evidence)
            self._close(step, outcome, verdict, why)
            if inc is None:
                continue
            if verdict is Verdict.VERIFIED:
                self._recovered[inc.condition] = (inc, step)
            elif escalation is None:
                escalation = self._climb(step, inc, inc.rung + 1, check.action, None)
        return escalation

    def _fail_checks_of(self, step: int, inc: _Incident, why: str) -> None:
        for check in [c for c in self._checks if c.incident == inc.id]:
            self._checks.remove(check)
            self._close(step, Outcome(check.step, check.action, Status.APPLIED, why, check.evidence),
                        Verdict.FAILED, why)

    def _close(self, step: int, outcome: Outcome, verdict: Verdict, why: str) -> None:
        """Record, log and report an action's verdict."""
        closed = Outcome(step, outcome.action, outcome.status, why, dict(outcome.evidence, applied_step=outcome.step),
                         verdict)
        self.history.append(closed)
        self.verdicts.append(closed)
        log.warning("losswatch: the %s applied at step %d is %s at step %d: %s",
                    outcome.action.get("type"), outcome.step, verdict.value, step, why)
        self._report(step, dict(outcome.action, verdict=verdict.value, verdict_reason=why), applied=False,
                     evidence=closed.evidence)

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

    def _restart_target(self, step: int, act: dict[str, Any], alert: Any,
                        inc: _Incident | None) -> tuple[int, str] | None:
        """(the step a cut restarts from, why), or None when the cut is made in place."""
        if not (self.restart_on_cut and self.on_rollback is not None and act.get("type") == "scale_lr"
                and isinstance(act.get("factor"), (int, float)) and float(act["factor"]) < 1):
            return None
        named = _evidence(alert)
        # ``restart_step`` is the detector asking for a restart at any severity (a run stuck
        # early: the cut alone leaves the weights in the flat region); otherwise only a critical
        # alert's last good step counts
        keys = ("restart_step",) if _get(alert, "severity") != "critical" else \
            ("restart_step", "best_step", "last_finite_step")
        for key in keys:
            v = named.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < step:
                if inc is not None and key != "restart_step":
                    v = min(v, max(0, inc.first_step - 1))  # never a step inside the run-away
                return v, ("the loss blew up" if key != "restart_step" else "training got stuck")
        return None

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
        elif kind == "skip_batch":
            if self.optimizer is None or self._optimizer_problem:
                return "no torch optimizer whose gradients could be dropped to skip the batch"
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
            return self._roll_back(step, int(act["to_step"]))
        if kind == "skip_batch":
            self._drop_gradients()
            return "the batch in flight was skipped (its gradients dropped)"
        # stop: the user's on_stop first, so that one that raises leaves the run going as it was
        if self.on_stop is not None:
            self.on_stop()
        self.stop_requested = True
        return "training asked to stop"

    def _roll_back(self, step: int, to_step: int) -> str:
        """Hand the latest checkpoint at or before ``to_step`` to ``on_rollback(step, checkpoint)``
        (or ``on_rollback(step)``, the one-argument form), then drop the gradients in flight.

        Without any checkpoint recorded (``Monitor.checkpoint``), ``on_rollback`` gets ``to_step``
        and finds its own state (the checkpoint argument is None). With checkpoints recorded but
        none left at or before ``to_step`` (deleted), nothing is called: :class:`_NoCheckpoint`.
        """
        target, token = self._checkpoint_for(to_step)
        if self._rollback_arity >= 2:
            self.on_rollback(target, token)  # type: ignore[misc]
        else:
            self.on_rollback(target)  # type: ignore[misc]
        self._drop_gradients()
        self.levels.rewind(target)
        mark = getattr(self.monitor, "mark_rewind", None)
        if mark is not None:
            try:
                mark(target, step)
            except Exception as exc:  # reporting is best effort
                log.warning("losswatch could not mark the rewind: %s", exc)
        return f"rolled back to step {target}" + (f" ({token})" if isinstance(token, str) else "")

    def _checkpoint_for(self, to_step: int) -> tuple[int, Any]:
        """(step, token) of the checkpoint a rollback to ``to_step`` restores; ``(to_step, None)``
        with none recorded; :class:`_NoCheckpoint` when those recorded are all later or gone."""
        if not len(self.checkpoints):
            return to_step, None
        ck = self.checkpoints.before(to_step + 1)
        if ck is None:
            raise _NoCheckpoint(f"no checkpoint at or before step {to_step} exists any more: no rollback; "
                                f"the ladder goes on")
        return ck.step, ck.token

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
    def _record(self, step: int, act: dict[str, Any], status: Status, reason: str,
                evidence: dict[str, Any] | None = None) -> Outcome:
        outcome = Outcome(step, act, status, reason, dict(evidence or {}))
        self.history.append(outcome)
        if status is Status.APPLIED or status is Status.DRY_RUN:
            self.actions.append(outcome)
            log.warning("losswatch %s at step %d: %s (%s)", status.value.replace("_", " "), step, act, reason)
        return outcome

    def _failed(self, step: int, act: dict[str, Any], exc: BaseException,
                evidence: dict[str, Any] | None = None) -> Outcome:
        """An effect raised (the user's on_rollback or on_stop, an optimizer): one warning, the run
        goes on, and nothing else is done in its place (no stop instead of a rollback)."""
        what = {"rollback": "your on_rollback", "stop": "your on_stop"}.get(act["type"], f"{act['type']}")
        reason = f"{what} raised {exc!r}; nothing else was changed and training goes on"
        log.warning("losswatch at step %d: %s", step, reason)
        return self._record(step, act, Status.FAILED, reason, evidence)

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

    def _report(self, step: int, act: dict[str, Any], applied: bool, evidence: dict[str, Any] | None = None) -> None:
        """Tell the monitor (and so the service). The evidence travels inside the action dict (the
        service keeps an action's extra fields), without the reason's duplicate."""
        report = getattr(self.monitor, "report_action", None)
        if report is None:
            return
        if evidence:
            act = dict(act, evidence={k: v for k, v in evidence.items() if v is not None})
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


_NOTHING_LEFT = "nothing left to do at this rung (the LR is at its floor, or raises were stopped)"


class _NoCheckpoint(Exception):
    """Checkpoints were recorded but none at or before the rollback's target exists any more."""


@dataclass
class _Incident:
    """One incident as the Actor climbs its ladder."""

    id: str
    condition: str
    first_step: int  # the incident began here: a rollback goes to a checkpoint before it
    alert_id: Any
    event: Any
    pre_loss: float | None  # the loss / grad-norm levels before it began (verification's bar)
    pre_gn: float | None
    rung: int = -1
    attempts: int = 0
    relapses: int = 0


def _arity(fn: Any) -> int:
    """2 when ``fn`` takes (step, checkpoint), 1 for the older ``on_rollback(step)``."""
    if fn is None:
        return 1
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    n = 0
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return 2
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return 2 if n >= 2 else 1
