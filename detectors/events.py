"""The events of an alert's life, named once for every consumer (the engine's alert copies,
the client's ``on_alert``, replay, metrics, notifications): ``raised``, ``escalated``,
``updated``, ``resolved``.

Standard library only, so the client uses it without numpy.

An alert is an episode: raised once, then updated. An update is an *escalation* when it asks for
more than the version before it: a higher severity, or another action (a further LR cut, a
rollback after a cut) at any severity; dropping the action to "none" asks nothing new. The first
version with a ``resolved_step`` is the resolution. Anything else (a longer episode, new
evidence, new words, a lower severity) is an ``updated`` copy: consumers that tell people
(``on_alert``, notifications) skip it.

>>> event_between(None, {"severity": "warning", "action": {"type": "none"}})
'raised'
>>> old = {"severity": "critical", "action": {"type": "scale_lr", "factor": 0.1}}
>>> event_between(old, dict(old, action={"type": "scale_lr", "factor": 0.1, "reason": "again"})) is None
True
>>> event_between(old, dict(old, action={"type": "rollback", "to_step": 10}))
'escalated'
>>> event_between(old, dict(old, resolved_step=40))
'resolved'
"""

from __future__ import annotations

# typing costs ~3 ms to import; annotations are strings (PEP 563), so only checkers need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["RAISED", "ESCALATED", "UPDATED", "RESOLVED", "EVENTS", "ALERT_EVENTS", "escalates",
           "event_between"]

RAISED = "raised"
ESCALATED = "escalated"
UPDATED = "updated"
RESOLVED = "resolved"
#: the events a person is told of
EVENTS = (RAISED, ESCALATED, RESOLVED)
#: every event an alert copy can carry (``Alert.event``)
ALERT_EVENTS = (RAISED, ESCALATED, UPDATED, RESOLVED)

_RANK: dict[str | None, int] = {"info": 0, "warning": 1, "critical": 2}


def _advice(alert: dict[str, Any]) -> tuple:
    """What an alert asks for, without the words: the action's type and parameters."""
    action = alert.get("action")
    if not isinstance(action, dict):
        return ()
    return tuple(sorted((k, repr(v)) for k, v in action.items() if k != "reason"))


def escalates(old_severity: str | None, old_advice: tuple, new_severity: str | None, new_advice: tuple) -> bool:
    """The rule: a higher severity, or another action (advice tuples as ``_advice`` builds them:
    type and parameters, without the words) that is not "none"."""
    if _RANK.get(new_severity, 0) > _RANK.get(old_severity, 0):
        return True
    return bool(new_advice) and new_advice != old_advice and dict(new_advice).get("type") != repr("none")


def advice_of(action_type: str, params: dict[str, Any]) -> tuple:
    """The advice tuple of an action given as its type and parameters (``types.Action``)."""
    return _advice({"action": {"type": action_type, **params}})


def event_between(previous: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """The event that ``new`` is after ``previous`` (the version of the same alert the consumer
    last saw; None when it saw none), or None when the update is no event."""
    resolved = new.get("resolved_step") is not None
    if previous is None:
        return RESOLVED if resolved else RAISED
    if previous.get("resolved_step") is not None:
        return None  # told already that it ended
    if resolved:
        return RESOLVED
    if new.get("event") == ESCALATED and new.get("last_step") != previous.get("last_step"):
        return ESCALATED  # the detector says so: the same advice once more (a further LR cut)
    if escalates(previous.get("severity"), _advice(previous), new.get("severity"), _advice(new)):
        return ESCALATED
    return None
