"""The detector protocol: what every detector (ours and plug-ins) implements.

A detector is a small class with parameters, state and one decision method, in the spirit of
river's drift detectors. The :class:`~losswatch.detectors.engine.Engine` owns one instance of
each detector per run and feeds them *rows* of shared, pre-computed features
(:class:`~losswatch.detectors.features.Features`): the raw signals of each step (loss,
grad-norm, LR, val-loss) plus the running statistics several detectors share (EMAs of the
loss, its best value, rising streaks, log-grad-norm mean/variance, LR peak and reversals...).
Those statistics are computed once per step for all detectors, by the same code in the
one-record and the batch path, so both paths see bit-identical numbers.

Protocol (subclass :class:`Detector`)
-------------------------------------
name : str (class attribute)
    Unique within an engine; becomes ``Alert.detector``.
kind : str (class attribute)
    One of ``types.KINDS``; becomes ``Alert.kind`` (alert id = ``f"{run_id}:{kind}:{step}"``, or
    ``kind.name`` in the middle when ``name != kind``).
__init__(self, **params)
    Keyword parameters only, plain JSON values, with documented defaults. Pass them all to
    ``super().__init__(**params)``: the base keeps them in ``self.params`` (serialised; the
    engine rebuilds a detector as ``cls(**params)`` then calls ``set_state``) and as attributes
    (``self.<param>``), so a subclass assigns only what it derives from them.
step(self, f, i) -> None
    Decide at row ``i`` of features ``f`` (causal: use rows <= i only, which is all the engine
    ever gives). Open/update/close your episode with ``self.open_episode``,
    ``self.update_episode`` and ``self.close_episode``; do not build Alerts by hand.
    Must be cheap pure-Python float code (no numpy on scalars: it is the hot path).
screen(self, f) -> numpy bool array | None
    Vectorised, *conservative* pre-filter for the batch path while the detector is idle (no
    active episode): rows where ``step`` might do anything. Rows outside the mask are skipped,
    so ``step`` MUST be a no-op on them (including on any private state: if you keep counters,
    key them on ``f.rec[i]``, the record ordinal, rather than counting calls). ``None`` means
    "call me on every row" (always correct, slower). Over-inclusion is harmless (``step``
    re-checks in Python), under-inclusion is a bug; the equivalence tests catch it.
active_screen(self, f) -> numpy bool array | None
    The same while an episode is active (rows where it may escalate, update or resolve).
    Default None (every row). Both screens are re-evaluated after every change of the episode
    (they may depend on it), except ``screen`` when ``static_screen = True``.
get_state(self) -> dict / set_state(self, d) -> None
    Plain JSON-able state of *your own* counters (floats may be NaN/inf: the engine's
    serialiser keeps them). The active episode (``self.alert``) is serialised by the base class.
judges_descent : bool (class attribute, default True)
    Whether the rules read the loss as something training drives down: such detectors are off
    for a run whose metadata declares another ``objective`` (a GAN's, an RL loss; see
    :mod:`~losswatch.detectors.objective`). Set it False only for facts that hold whatever the
    loss means.
from_meta(cls, meta, **params) -> Detector | None  (optional classmethod)
    For detectors the engine creates from run metadata (``engine.META_DETECTORS``: the schedule
    monitor when ``meta["lr_schedule"]`` is present, the SGD-efficiency rule for SGD runs);
    ``params`` are the engine's overrides for it. Return None to decline.

Episodes
--------
One alert per episode, not one per step: ``open_episode`` raises an alert (id from the opening
step); ``update_episode`` changes severity/message/evidence/action of the same alert (call it on
escalation or material change only, each call is reported as a change); ``close_episode`` sets
``resolved_step`` and re-arms the detector. The engine collects every change as a snapshot, with
its event (``types.ALERT_EVENTS``): raised, escalated (severity up or a new action), updated or
resolved; the engine then sets each snapshot's incident (incidents.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from .batch import Batch
from .events import ESCALATED, RESOLVED, UPDATED, advice_of, escalates
from .features import Features, FeatureTracker
from .types import Action, Alert, Record


class Detector:
    """Base class: episode bookkeeping and (de)serialisation. See the module docstring."""

    name: ClassVar[str] = "detector"
    kind: ClassVar[str] = "spike"
    #: True when ``screen`` depends only on the features and the parameters (not on state that
    #: ``step`` changes): the engine then computes it once per batch instead of after every
    #: episode change. Leave False if unsure (always correct).
    static_screen: ClassVar[bool] = False
    #: True when the rules read the loss as something training drives down to a floor (a rise
    #: is bad, a stall is slow): such a detector stays off for a run whose metadata declares
    #: another objective (:mod:`~losswatch.detectors.objective`). False only for facts that hold
    #: whatever the loss means (a non-finite value, the gradient's size, the LR).
    judges_descent: ClassVar[bool] = True

    if TYPE_CHECKING:
        # the parameters are attributes, set from __init__'s keyword arguments (see __init__)
        def __getattr__(self, name: str) -> Any: ...

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        # setattr, not self.__dict__.update: touching __dict__ turns off CPython's inline
        # attribute values and makes every self.<param> read in step() ~2x slower
        for k, v in params.items():
            setattr(self, k, v)
        self.run_id: str = ""
        self.alert: Alert | None = None
        self._changes: list[Alert] = []

    # -- protocol -----------------------------------------------------------------------------
    def step(self, f: Features, i: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def screen(self, f: Features):  # noqa: ANN201 - numpy optional in the signature
        return None

    def active_screen(self, f: Features):  # noqa: ANN201
        return None

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, d: dict[str, Any]) -> None:
        return None

    @classmethod
    def from_meta(cls, meta: dict[str, Any], **params: Any) -> "Detector | None":
        return None

    # -- episodes -----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.alert is not None

    def open_episode(self, step: int, severity: str, message: str, evidence: dict[str, Any],
                     action: Action) -> Alert:
        """Raise a new alert (the detector must not have an active one)."""
        a = Alert(run_id=self.run_id, step=step, kind=self.kind, severity=severity,
                  detector=self.name, message=message, evidence=evidence, action=action)
        self.alert = a
        self._changes.append(_snapshot(a))
        return a

    def update_episode(self, step: int, severity: str | None = None, message: str | None = None,
                       evidence: dict[str, Any] | None = None, action: Action | None = None,
                       again: bool = False) -> None:
        """Escalate or update the active alert (same id). The change is reported as
        ``escalated`` when the severity goes up, the alert asks for another action, or ``again``
        says it asks for the same action once more (a further LR cut after one that did not
        work), else as ``updated`` (see ``events.py``)."""
        a = self.alert
        if a is None:
            return
        old_severity, old_advice = a.severity, advice_of(a.action.type, a.action.params)
        if severity is not None:
            a.severity = severity
        if message is not None:
            a.message = message
        if evidence is not None:
            a.evidence = evidence
        if action is not None:
            a.action = action
        a.last_step = step
        a.event = ESCALATED if again or escalates(old_severity, old_advice, a.severity,
                                                  advice_of(a.action.type, a.action.params)) else UPDATED
        self._changes.append(_snapshot(a))

    def close_episode(self, step: int, note: str | None = None) -> None:
        """The run recovered: resolve the alert and re-arm."""
        a = self.alert
        if a is None:
            return
        a.resolved_step = step
        a.last_step = step
        a.event = RESOLVED
        if note:
            a.evidence = {**a.evidence, "resolution": note}
        self._changes.append(_snapshot(a))
        self.alert = None

    def drain_changes(self) -> list[Alert]:
        out = self._changes
        self._changes = []
        return out

    # -- serialisation ------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"params": self.params, "state": self.get_state(),
                "alert": None if self.alert is None else _alert_state(self.alert)}

    def load_state(self, d: dict[str, Any]) -> None:
        self.set_state(d.get("state") or {})
        a = d.get("alert")
        self.alert = None if a is None else _alert_from_state(a)


def drive(detector: Detector, records: Iterable[Record], features: dict[str, float] | None = None) -> list[Alert]:
    """Feed ``records`` to one detector alone, one record at a time, as the Engine does; return
    its alert changes (the Engine's snapshots for that detector, without an incident id).

    The shared statistics come from a fresh :class:`~losswatch.detectors.features.FeatureTracker`
    (``features``: overrides of its parameters, as ``Engine(params={"features": ...})``); values
    are read as ``update_batch`` reads them, and records at or below the last step are ignored.
    For tests and examples: a rule can be watched without the other detectors.

    >>> from losswatch.detectors.divergence import DivergenceDetector
    >>> alerts = drive(DivergenceDetector(), [Record(s, x) for s, x in enumerate([2.5, 2.4, 2.6, 3.1, 4.2])])
    >>> [(a.kind, a.step, a.evidence["rule"]) for a in alerts]
    [('divergence', 4, 'streak')]
    """
    tracker = FeatureTracker(features)
    out: list[Alert] = []
    last: int | None = None
    for step, loss, gn, lr, val in Batch.from_records(records).rows():
        if last is not None and step <= last:
            continue
        last = step
        detector.step(tracker.advance_one(step, loss, gn, lr, val), 0)
        out += detector.drain_changes()
    return out


def _snapshot(a: Alert) -> Alert:
    """An independent copy (the live alert keeps changing; the caller keeps what it saw)."""
    return Alert(run_id=a.run_id, step=a.step, kind=a.kind, severity=a.severity,
                 detector=a.detector, message=a.message, evidence=dict(a.evidence),
                 action=Action(a.action.type, dict(a.action.params), a.action.reason),
                 last_step=a.last_step, resolved_step=a.resolved_step,
                 acknowledged=a.acknowledged, id=a.id, event=a.event, incident=a.incident)


def _alert_state(a: Alert) -> dict[str, Any]:
    # Not Alert.to_dict(): that encodes non-finite floats as strings for the wire; our state
    # serialiser keeps real floats (NaN included) and must round-trip evidence exactly.
    return {"id": a.id, "run_id": a.run_id, "step": a.step, "kind": a.kind, "severity": a.severity,
            "detector": a.detector, "message": a.message, "evidence": a.evidence,
            "action": {"type": a.action.type, "params": a.action.params, "reason": a.action.reason},
            "last_step": a.last_step, "resolved_step": a.resolved_step,
            "acknowledged": a.acknowledged, "event": a.event, "incident": a.incident}


def _alert_from_state(d: dict[str, Any]) -> Alert:
    act = d["action"]
    return Alert(run_id=d["run_id"], step=d["step"], kind=d["kind"], severity=d["severity"],
                 detector=d["detector"], message=d["message"], evidence=d["evidence"],
                 action=Action(act["type"], act["params"], act["reason"]),
                 last_step=d["last_step"], resolved_step=d["resolved_step"],
                 acknowledged=d["acknowledged"], id=d["id"],
                 # states saved before events and incidents existed
                 event=d.get("event", "raised"), incident=d.get("incident", ""))


def fmt(x: float) -> str:
    """A number for a message: 3 significant digits, scientific when tiny or huge."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    ax = abs(x)
    if ax != 0 and (ax < 1e-3 or ax >= 1e5):
        return f"{x:.2e}"
    return f"{x:.3g}"
