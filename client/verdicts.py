"""What the run's judges say, as the training loop reads it: alerts, health, advice, and events.

Two judges speak about one run: the NaN check of the training process (:class:`~.local.NanWatch`,
on the very step) and the detectors (the service's, through the answers to each batch, or the
in-process ones). :class:`Verdicts` merges both into the state the loop reads at any time
(``alerts``, ``health``, ``recommendation``), and turns each change a person should hear of into
an event (``raised``, ``escalated``, ``resolved``: :mod:`losswatch.detectors.events`) that is
logged on the ``losswatch`` logger and handed to ``on_alert``, in the worker's thread. New advice
goes to ``on_advice`` (the Actor hook, when acting is on).
"""

from __future__ import annotations

import threading
import warnings
from collections import deque

from losswatch.detectors.events import event_between

from .local import NanWatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

_RANK = {"ok": 0, "info": 0, "warning": 1, "critical": 2}  # health and severity, worst last


def is_advice(action: dict | None) -> bool:
    """An action to take (not missing, not ``{"type": "none"}``)."""
    return bool(action) and action.get("type") not in (None, "none")


class Verdicts:
    """The run's alerts, health and advice, merged from the NaN check and the detectors.

    Parameters
    ----------
    run_id : str
    on_alert : callable, optional
        ``on_alert(alert_dict)`` for each event, in the worker's thread (see :meth:`tell`).

    Attributes
    ----------
    alerts : list of dict
        One entry per alert id, its latest copy.
    recommendation : dict or None
        The current advice, None when there is none.
    health : str
        "ok", "warning" or "critical".
    nan : NanWatch
        The NaN check's episodes.
    on_advice : callable or None
        Given each verdict's advice (under this object's lock); set by the Actor hook.
    """

    def __init__(self, run_id: str, on_alert: Callable[[dict], Any] | None = None) -> None:
        self.run_id = run_id
        self.on_alert = on_alert
        self.on_advice: Callable[[dict], None] | None = None
        self.alerts: list[dict[str, Any]] = []
        self.recommendation: dict[str, Any] | None = None
        self.health = "ok"
        self.nan = NanWatch(run_id)
        self._index: dict[str, int] = {}
        self._told: dict[str, dict[str, Any]] = {}  # id -> the version on_alert was given
        self._events: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._on_alert_warned = False

    # ------------------------------------------------------------ the NaN check
    def nan_in_log(self, step: int, loss: Any, grad_norm: Any, alone: bool) -> bool:
        """A non-finite Python float in ``log()``: True when it raised or escalated the NaN alert.
        ``alone``: no other judge speaks about this run (its health is the NaN check's)."""
        alert = self.nan.check(step, loss, grad_norm, in_log=True)
        if alert is None:
            return False
        self._merge([alert], local=True, alone=alone)
        return True

    def observe(self, records: list[dict[str, Any]], alone: bool) -> None:
        """The NaN check over one cycle's resolved records (the worker's thread)."""
        changed = self.nan.observe(records)
        if changed:
            self._merge(changed, local=True, alone=alone)

    # ------------------------------------------------------------ the detectors
    def apply(self, alerts: list[dict], rec: dict | None, health: str | None, has_rec: bool = True) -> None:
        """A verdict of the detectors: the alerts that changed, the advice, the health.
        ``has_rec``: the verdict says what the advice is (None: there is none)."""
        if alerts:
            self._merge([a for a in alerts if isinstance(a, dict) and "id" in a], local=False, alone=False)
        # under the lock: the training thread's NaN check raises the run to critical under it
        # too, and must not be overwritten by this older verdict between the read and the write
        with self._lock:
            if health in ("ok", "warning", "critical"):
                # a NaN caught here but not yet seen by the service keeps the run critical
                self.health = "critical" if self.nan.critical else health
            if has_rec:
                rec = rec if isinstance(rec, dict) else None
                if rec is None and self.nan.critical:
                    return  # the service has not seen the NaN caught here yet: keep that advice
                self._advise(rec)

    def _merge(self, alerts: list[dict], local: bool, alone: bool) -> None:
        """Keep the latest copy per alert id; queue an event for raised/escalated/resolved ones.

        The same episode can arrive from two sources (the local NaN check, then the service,
        whose detector may resolve it a few steps later), so an event is what the user has not
        been told yet, judged against the version last told (``event_between``): a new id, a
        higher severity or different advice, or the first resolution; never twice for one.
        """
        with self._lock:
            for a in alerts:
                i = self._index.get(a["id"])
                if i is None:
                    self._index[a["id"]] = len(self.alerts)
                    self.alerts.append(a)
                else:
                    self.alerts[i] = a
                event = event_between(self._told.get(a["id"]), a)
                if event is not None:
                    self._told[a["id"]] = a
                    self._events.append(dict(a, event=event))
            if local:
                for a in alerts:
                    if a.get("resolved_step") is None:
                        if _RANK.get(a.get("severity"), 0) > _RANK.get(self.health, 0):
                            self.health = a["severity"]
                        if is_advice(a.get("action")):
                            self._advise(a["action"])
                if alone and not self.nan.active:
                    self.health = "ok"  # the NaN check is the only judge: the run is healthy again

    def _advise(self, rec: dict | None) -> None:
        """Under the lock: the current advice (None when ``rec`` is no advice)."""
        advice = is_advice(rec)
        self.recommendation = rec if advice else None
        if advice and self.on_advice is not None:
            # every verdict that carries advice is shown (the same advice may now stand on an
            # escalated or longer-lived alert); the Actor drops what it has already decided on
            self.on_advice(rec)  # type: ignore[arg-type]

    def replay_advice(self) -> None:
        """Hand the advice that stands now to ``on_advice`` (acting was just turned on)."""
        with self._lock:
            if self.recommendation is not None and self.on_advice is not None:
                self.on_advice(self.recommendation)

    # ------------------------------------------------------------ events
    def tell(self) -> None:
        """Log each queued event on the ``losswatch`` logger and hand it to ``on_alert`` (in the
        worker's thread, after each cycle). A callback that raises is warned about once."""
        if not self._events:
            return
        from .announce import alert_event

        cb = self.on_alert
        while self._events:
            alert = self._events.popleft()
            alert_event(self.run_id, alert)  # told on the losswatch logger, on_alert or not
            if cb is None:
                continue
            try:
                cb(alert)
            except Exception as e:
                if not self._on_alert_warned:
                    self._on_alert_warned = True
                    warnings.warn(f"losswatch: the on_alert callback raised {e!r}; training goes on "
                                  f"(warned once)", RuntimeWarning, stacklevel=2)

    def after_fork_in_child(self) -> None:
        """The worker's thread did not survive the fork and a lock may have been copied held."""
        self._events = deque()
        self._lock = threading.Lock()
        self.nan.after_fork_in_child()
