"""Incidents: which alerts describe one problem of a run.

Rule
----
An alert raised while another alert of a related kind is active joins that alert's incident;
otherwise it opens an incident of its own, whose id is the alert's id. Related kinds are those
that share a group of ``types.INCIDENT_GROUPS`` (a spike inside a divergence, the NaN that ends
it, a run that saturates after blowing up). An incident stays open while one of its alerts is
active, so a consumer that keys on the incident id shows one verdict per incident, refined or
escalated by its later alerts.

The book is applied to the engine's changes in step order, after all detectors ran: in the batch
path the detectors run one after another over the whole batch, so an alert raised at row 40 by
one detector must not see an alert another detector raises at row 50. Both paths hand the book
the same changes in the same order, so both give the same incident ids.

One verdict
-----------
While an alert of warning or worse asks to lower the LR, roll back or stop (``Action.direction``
"down"), no alert of the run asks to raise it: the raise is withheld (its action becomes "none",
with the reason) on every copy the engine reports, and an alert already asking for a raise is
reported again, withheld, at the step the lowering alert appears. Lowering is the safe side: a run
that is blowing up or stuck after a blow-up is not helped by a larger LR, and a tired reader must
not get both. Likewise a note (info) of an incident whose open alert lowers the LR does not give
advice of its own ("nothing to do if the next evaluation is back" beside "cut the LR 10x"): its
reason says that the incident's alert's advice stands, and a note raised before that alert is
reported again (``updated``) when it opens.

Example
-------
>>> from losswatch.detectors.types import Alert
>>> book = IncidentBook()
>>> div = Alert(run_id="r", step=4, kind="divergence", severity="critical", detector="divergence", message="")
>>> nan = Alert(run_id="r", step=5, kind="nan", severity="critical", detector="nan", message="")
>>> [a.kind for a in book.assign([div, nan])]
['divergence', 'nan']
>>> nan.incident
'r:divergence:4'
"""

from __future__ import annotations

from typing import Any, Iterable

from .base import _alert_from_state, _alert_state, _snapshot
from .types import INCIDENT_PEERS, SEVERITY_RANK, Action, Alert

_WARNING = SEVERITY_RANK["warning"]


def lowers_lr(a: Alert) -> bool:
    """A warning-or-worse alert that asks to lower the LR, roll back or stop."""
    return a.resolved_step is None and SEVERITY_RANK.get(a.severity, 0) >= _WARNING \
        and a.action.direction == "down"


def withheld(a: Alert, by_kind: str, by_step: int) -> Action:
    """The action ``a`` gets when its LR raise contradicts a lowering alert."""
    why = f"not raising the LR while the {by_kind} alert (step {by_step}) asks to lower it"
    return Action("none", {}, f"{why} (withheld: {a.action.reason})" if a.action.reason else why)


_ALONE = " (this note alone: "


def subsumed(a: Alert, by: Alert) -> Action:
    """The action a note ``a`` gets inside the incident of the lowering alert ``by`` (its own
    words kept once, however many lowering alerts it deferred to)."""
    why = f"part of the {by.kind} incident (step {by.step}): that alert's advice stands"
    own = a.action.reason
    if own.startswith("part of the ") and _ALONE in own:
        own = own.split(_ALONE, 1)[1][:-1]
    return Action("none", {}, f"{why}{_ALONE}{own})" if own else why)


def is_open_note(a: Alert) -> bool:
    return a.resolved_step is None and a.severity == "info" and a.incident is not None


def withhold_raises(alerts: list[Alert]) -> None:
    """Apply the one-verdict rule to a set of alerts active together (snapshots, changed in place)."""
    lower = next((b for b in alerts if lowers_lr(b)), None)
    if lower is None:
        return
    for a in alerts:
        if a.resolved_step is None and a.action.direction == "up":
            a.action = withheld(a, lower.kind, lower.step)
        elif is_open_note(a):
            own = next((b for b in alerts if lowers_lr(b) and b.incident == a.incident), None)
            if own is not None:
                a.action = subsumed(a, own)


class IncidentBook:
    """The open alerts of one run with their incident: alert id -> (kind, incident id), and the
    latest copy of each open alert that asks to lower or raise the LR (for the one-verdict rule)."""

    def __init__(self, open_alerts: dict[str, list[str]] | None = None,
                 directed: list[dict[str, Any]] | None = None,
                 notes: list[dict[str, Any]] | None = None) -> None:
        # insertion order = raising order: an alert joins the oldest related open incident
        self._open: dict[str, tuple[str, str]] = {
            aid: (kind, inc) for aid, (kind, inc) in (open_alerts or {}).items()}
        self._directed: dict[str, Alert] = {d["id"]: _alert_from_state(d) for d in directed or ()}
        # the open notes (info), as last reported: a lowering alert that opens in their
        # incident later reports them again, deferring to it
        self._notes: dict[str, Alert] = {d["id"]: _alert_from_state(d) for d in notes or ()}

    def assign(self, changes: Iterable[Alert]) -> list[Alert]:
        """Set ``incident`` on each change (snapshots, in step order), apply the one-verdict rule
        and track open alerts. Returns the changes, with a withheld copy of an open LR-raising
        alert inserted after the change that made it contradict."""
        out: list[Alert] = []
        for a in changes:
            entry = self._open.get(a.id)
            if entry is None and a.resolved_step is None:
                entry = (a.kind, self._join(a) if a.event == "raised" else a.incident or a.id)
                self._open[a.id] = entry
            if entry is not None:
                a.incident = entry[1]
            if a.resolved_step is not None:
                self._open.pop(a.id, None)
            out.append(a)
            out.extend(self._one_verdict(a))
        return out

    def _one_verdict(self, a: Alert) -> list[Alert]:
        """Withhold ``a``'s raise if a lowering alert is open; a note in the incident of a
        lowering alert defers to it; if ``a`` newly lowers, report the open raises (withheld)
        and the open notes of its incident (deferring) again."""
        # whether the incident had a lowering alert before this change (this alert's own earlier
        # copy included: an escalation of the same alert is not a new one)
        before_in_incident = self._lowering(a.incident)
        self._directed.pop(a.id, None)
        self._notes.pop(a.id, None)
        direction = a.action.direction if a.resolved_step is None else "none"
        if direction == "none":
            if is_open_note(a):
                own = self._lowering(a.incident)
                if own is not None:
                    a.action = subsumed(a, own)
                self._notes[a.id] = a
            return []
        lower = next((b for b in self._directed.values() if lowers_lr(b)), None)
        if direction == "up":
            if lower is not None:
                a.action = withheld(a, lower.kind, lower.step)
            self._directed[a.id] = a
            return []
        self._directed[a.id] = a
        if not lowers_lr(a):
            return []  # not severe enough
        again = []
        if lower is None:  # the raises were not withheld yet
            for b in list(self._directed.values()):
                if b.action.direction == "up":
                    c = _snapshot(b)
                    c.action = withheld(b, a.kind, a.step)
                    c.last_step, c.event = a.last_step, "updated"
                    self._directed[c.id] = c
                    again.append(c)
        if before_in_incident is None:  # the incident's notes gave their own advice so far
            for n in list(self._notes.values()):
                if n.incident == a.incident:
                    c = _snapshot(n)
                    c.action = subsumed(n, a)
                    c.last_step, c.event = a.last_step, "updated"
                    self._notes[c.id] = c
                    again.append(c)
        return again

    def _lowering(self, incident: str | None) -> Alert | None:
        """The open alert of ``incident`` that lowers the LR, rolls back or stops, if any."""
        return next((b for b in self._directed.values() if lowers_lr(b) and b.incident == incident), None)

    def _join(self, a: Alert) -> str:
        peers = INCIDENT_PEERS.get(a.kind, frozenset((a.kind,)))
        for kind, incident in self._open.values():
            if kind in peers:
                return incident
        return a.id

    def incident_of(self, alert: Alert) -> str:
        entry = self._open.get(alert.id)
        return alert.incident if entry is None else entry[1]

    def to_state(self) -> dict[str, Any]:
        return {"open": {aid: [kind, inc] for aid, (kind, inc) in self._open.items()},
                "directed": [_alert_state(a) for a in self._directed.values()],
                "notes": [_alert_state(a) for a in self._notes.values()]}

    @classmethod
    def from_state(cls, d: dict[str, Any] | None) -> "IncidentBook":
        d = d or {}
        return cls(d.get("open"), d.get("directed"), d.get("notes"))  # states saved before notes: none
