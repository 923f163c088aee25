"""The events of an alert's life, named once for every consumer (the client's ``on_alert``,
replay, metrics, notifications): ``raised``, ``escalated``, ``resolved``.

Standard library only, so the client uses it without numpy.

An alert is an episode: raised once, then updated. An update is an *escalation* when it asks for
more than the version the consumer last saw: a higher severity, or a different action (a further
LR cut, a rollback after a cut) at any severity. The first version with a ``resolved_step`` is
the resolution. Anything else (a longer episode, new evidence) is no event.

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

__all__ = ["RAISED", "ESCALATED", "RESOLVED", "EVENTS", "event_between"]

RAISED = "raised"
ESCALATED = "escalated"
RESOLVED = "resolved"
EVENTS = (RAISED, ESCALATED, RESOLVED)

_RANK = {"info": 0, "warning": 1, "critical": 2}


def _advice(alert: dict[str, Any]) -> tuple:
    """What an alert asks for, without the words: the action's type and parameters."""
    action = alert.get("action")
    if not isinstance(action, dict):
        return ()
    return tuple(sorted((k, repr(v)) for k, v in action.items() if k != "reason"))


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
    if _RANK.get(new.get("severity"), 0) > _RANK.get(previous.get("severity"), 0):
        return ESCALATED
    if _advice(new) != _advice(previous):
        return ESCALATED
    return None
