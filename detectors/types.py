"""The contracts every part of losswatch agrees on: a step record, an alert and an action.

These mirror ../shared/DESIGN.md ("The record", "Alerts and actions"). They are plain
dataclasses with ``to_dict``/``from_dict`` so the service, the client and the stores can move
them as JSON without importing anything heavier than this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import ALERT_EVENTS as _EVENTS
from .wire import NONFINITE, decode_float, encode_float  # noqa: F401 - the schema's codec

KINDS = (
    "nan",
    "divergence",
    "spike",
    "oscillation",
    "plateau",
    "dead",
    "grad_explosion",
    "grad_vanishing",
    "lr_anomaly",
    "overfitting",
)
SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
ACTION_TYPES = ("scale_lr", "clip_grad_norm", "rollback", "skip_batch", "add_warmup", "stop", "none")
HEALTH_STATES = ("ok", "warning", "critical")

#: What happened to an alert (``Alert.event``): raised, escalated, updated, resolved; the rule
#: that tells them apart lives in events.py.
ALERT_EVENTS = _EVENTS

#: Kinds that describe one incident when their alerts are open at the same time: an alert raised
#: while an alert of a kind in one of its groups is active joins that alert's incident (a spike
#: inside a divergence, the NaN that ends it, a run that saturates after blowing up). ``dead`` is
#: in two groups: a frozen loss ends a blow-up or is a stall of its own.
INCIDENT_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"nan", "divergence", "spike", "grad_explosion", "oscillation", "lr_anomaly", "dead"}),
    frozenset({"plateau", "dead", "grad_vanishing"}),
    frozenset({"overfitting"}),
)
#: kind -> the kinds whose open alerts it joins
INCIDENT_PEERS: dict[str, frozenset[str]] = {
    k: frozenset().union(*(g for g in INCIDENT_GROUPS if k in g)) for k in KINDS
}


def _num(v: Any) -> float | None:
    """A JSON-ish value as a float; None stays None (see :func:`decode_float`)."""
    if isinstance(v, bool):
        raise TypeError("a boolean is not a number")
    return decode_float(v)


@dataclass(slots=True)
class Record:
    """One training step. ``step`` is required, everything else optional (None = not logged).

    A NaN is a value (the loss was NaN), not a missing value: it stays ``float('nan')``.
    """

    step: int
    loss: float | None = None
    grad_norm: float | None = None
    lr: float | None = None
    val_loss: float | None = None
    ts: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        step = d["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        return cls(
            step=step,
            loss=_num(d.get("loss")),
            grad_norm=_num(d.get("grad_norm")),
            lr=_num(d.get("lr")),
            val_loss=_num(d.get("val_loss")),
            ts=_num(d.get("ts")),
            extra={k: float(v) for k, v in (d.get("extra") or {}).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite floats as strings)."""
        return {
            "step": self.step,
            "loss": encode_float(self.loss),
            "grad_norm": encode_float(self.grad_norm),
            "lr": encode_float(self.lr),
            "val_loss": encode_float(self.val_loss),
            "ts": self.ts,
            "extra": {k: encode_float(v) for k, v in self.extra.items()},
        }


@dataclass(slots=True)
class Action:
    """What to do. ``type`` is one of ACTION_TYPES; ``params`` e.g. {"factor": 0.1};
    ``reason`` says why, in words a tired person reads at 3 a.m."""

    type: str = "none"
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.params, "reason": self.reason}

    @property
    def direction(self) -> str:
        """Which way the action moves the run's LR: "down" (an LR cut, a warm-up, a rollback or
        a stop: the safe side), "up" (an LR raise) or "none"."""
        if self.type == "scale_lr":
            try:
                f = float(self.params.get("factor"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return "none"
            return "down" if f < 1 else "up" if f > 1 else "none"
        return "down" if self.type in ("rollback", "stop", "add_warmup") else "none"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Action":
        d = dict(d)
        t = d.pop("type", "none")
        reason = d.pop("reason", "")
        return cls(type=t, params=d, reason=reason)


@dataclass(slots=True)
class Alert:
    """One episode of one condition in one run.

    ``step`` is the step that raised it (first_step); ``last_step`` the latest step at which the
    episode was updated or escalated; ``resolved_step`` is set once the run has recovered and the
    detector re-armed. ``event`` says what this copy reports (one of ``ALERT_EVENTS``);
    ``incident`` is the id of the incident the alert belongs to: the id of the first alert of the
    incident (its own id when it opened it; see ``INCIDENT_GROUPS``). ``id`` is deterministic
    (run, kind, first step) so that replicas that replay the same run agree on it:
    ``run:kind:step``, or ``run:kind.detector:step`` when the detector is not named after its kind
    (two detectors share a kind, e.g. the schedule monitor and the LR-jump rule both raise
    lr_anomaly, and may open an episode on the same step).
    """

    run_id: str
    step: int
    kind: str
    severity: str
    detector: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    action: Action = field(default_factory=Action)
    last_step: int | None = None
    resolved_step: int | None = None
    acknowledged: bool = False
    id: str = ""
    event: str = "raised"
    incident: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            tag = self.kind if self.detector in ("", self.kind) else f"{self.kind}.{self.detector}"
            self.id = f"{self.run_id}:{tag}:{self.step}"
        if self.last_step is None:
            self.last_step = self.step
        if not self.incident:
            self.incident = self.id

    @property
    def active(self) -> bool:
        return self.resolved_step is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "step": self.step,
            "last_step": self.last_step,
            "resolved_step": self.resolved_step,
            "kind": self.kind,
            "severity": self.severity,
            "detector": self.detector,
            "message": self.message,
            "evidence": {k: encode_float(v) if isinstance(v, float) else v for k, v in self.evidence.items()},
            "action": self.action.to_dict(),
            "acknowledged": self.acknowledged,
            "event": self.event,
            "incident": self.incident,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Alert":
        return cls(
            id=d["id"],
            run_id=d["run_id"],
            step=d["step"],
            last_step=d.get("last_step"),
            resolved_step=d.get("resolved_step"),
            kind=d["kind"],
            severity=d["severity"],
            detector=d["detector"],
            message=d["message"],
            evidence=d.get("evidence") or {},
            action=Action.from_dict(d.get("action") or {}),
            acknowledged=bool(d.get("acknowledged", False)),
            event=d.get("event") or ("resolved" if d.get("resolved_step") is not None else "raised"),
            incident=d.get("incident") or "",
        )
