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

Example
-------
>>> from losswatch.detectors.types import Alert
>>> book = IncidentBook()
>>> div = Alert(run_id="r", step=4, kind="divergence", severity="critical", detector="divergence", message="")
>>> nan = Alert(run_id="r", step=5, kind="nan", severity="critical", detector="nan", message="")
>>> book.assign([div, nan])
>>> nan.incident
'r:divergence:4'
"""

from __future__ import annotations

from typing import Any, Iterable

from .types import INCIDENT_PEERS, Alert


class IncidentBook:
    """The open incidents of one run: active alert id -> (kind, incident id)."""

    def __init__(self, open_alerts: dict[str, list[str]] | None = None) -> None:
        # insertion order = raising order: an alert joins the oldest related open incident
        self._open: dict[str, tuple[str, str]] = {
            aid: (kind, inc) for aid, (kind, inc) in (open_alerts or {}).items()}

    def assign(self, changes: Iterable[Alert]) -> None:
        """Set ``incident`` on each change (snapshots, in step order) and track open alerts."""
        for a in changes:
            entry = self._open.get(a.id)
            if entry is None and a.resolved_step is None:
                entry = (a.kind, self._join(a) if a.event == "raised" else a.incident or a.id)
                self._open[a.id] = entry
            if entry is not None:
                a.incident = entry[1]
            if a.resolved_step is not None:
                self._open.pop(a.id, None)

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
        return {aid: [kind, inc] for aid, (kind, inc) in self._open.items()}

    @classmethod
    def from_state(cls, d: dict[str, Any] | None) -> "IncidentBook":
        return cls(d)
