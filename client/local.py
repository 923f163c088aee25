"""Detection inside the training process: the NaN check, and the full detectors without a service.

:class:`NanWatch` runs always, with or without a service: a non-finite loss or grad-norm is the
one condition that must be known on the very step, without waiting for a network round trip.
It keeps one episode per field (an alert when the value turns non-finite, resolved when it is
finite again) so a run that stays NaN raises one alert, not one per step.

:class:`LocalEngine` runs when no service URL is set: it feeds ``losswatch.detectors.Engine``
in the background thread when numpy (and the detectors) can be imported, and is absent otherwise
(the NaN check alone then). Nothing here is imported by ``import losswatch.client``.
"""

from __future__ import annotations

import threading

# typing costs ~3 ms to import; annotations are strings (PEP 563), so only checkers need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WATCHED = ("loss", "grad_norm")


def _describe(v: float) -> str:
    return "NaN" if v != v else ("+inf" if v > 0 else "-inf")


class NanWatch:
    """Episodes of non-finite loss / grad-norm, as alert dicts shaped like ``Alert.to_dict()``.

    One episode at a time (kind "nan", id ``<run>:nan:<first step>``, like the service's): it
    opens on the first non-finite loss or grad-norm and is resolved by the first later record
    whose logged loss and grad-norm are all finite.

    Parameters
    ----------
    run_id : str

    Examples
    --------
    >>> w = NanWatch("r1")
    >>> a = w.seen(7, "loss", float("nan"), in_log=True)
    >>> a["id"], a["kind"], a["severity"], a["action"]["type"], a["action"]["to_step"]
    ('r1:nan:7', 'nan', 'critical', 'rollback', 6)
    >>> w.seen(8, "grad_norm", float("inf")) is None      # same episode: no second alert
    True
    >>> [c["resolved_step"] for c in w.observe([{"step": 9, "loss": 2.0}])]
    [9]
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._open: dict[str, Any] | None = None
        self._last_finite: int | None = None  # last step whose loss was finite
        self._lock = threading.Lock()  # seen() runs in the training thread, observe() in the sender

    @property
    def active(self) -> bool:
        return self._open is not None

    def seen(self, step: int, field: str, value: float, in_log: bool = False) -> dict[str, Any] | None:
        """A non-finite ``value`` of ``field`` at ``step``: the new alert, or None if one is open.

        ``in_log``: called from ``log()`` (a float checked on its step), where the background
        thread may not have read the latest steps yet; the previous step is then known to be
        finite (else this episode would already be open).
        """
        with self._lock:
            a = self._open
            if a is not None:
                if isinstance(step, int) and step > a["last_step"]:
                    a["last_step"] = step
                a["evidence"].setdefault(field, _describe(value))
                return None
            self._open = self._alert(step, field, value, in_log)
            return self._open

    def observe(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Check resolved records in order; return alerts raised or resolved (copies)."""
        changed: list[dict[str, Any]] = []
        for rec in records:
            step = rec["step"]
            bad = None
            present = False
            for field in _WATCHED:
                v = rec.get(field)
                if v is None:
                    continue
                present = True
                if v - v != 0.0:
                    bad = (field, v)
                    break
            if bad is not None:
                new = self.seen(step, *bad)
                if new is not None:
                    changed.append(dict(new))
            elif present:
                if rec.get("loss") is not None:
                    self._last_finite = step
                with self._lock:
                    a = self._open
                    if a is not None and step > a["step"]:
                        self._open = None
                        changed.append(dict(a, resolved_step=step))
        return changed

    def _alert(self, step: int, field: str, value: float, in_log: bool = False) -> dict[str, Any]:
        what = "loss" if field == "loss" else "gradient norm"
        last_ok = self._last_finite
        if (in_log or last_ok is None) and isinstance(step, int) and step > 0:
            last_ok = step - 1
        if field == "grad_norm":
            # one batch overflowed (typical of fp16): skipping it keeps the weights finite
            action = {"type": "skip_batch",
                      "reason": f"the gradient norm is {_describe(value)} at step {step}: skip this "
                                f"batch's update so the weights stay finite; if it repeats, lower the LR"}
        elif last_ok is not None:
            action = {"type": "rollback", "to_step": last_ok,
                      "reason": f"the loss is {_describe(value)} at step {step}: the weights are "
                                f"probably corrupt; roll back to the checkpoint at or before step "
                                f"{last_ok} (finite loss) and lower the LR"}
        else:
            action = {"type": "stop",
                      "reason": f"the loss is {_describe(value)} at step {step}, before any finite "
                                f"loss was seen: stop and check the data, the loss and the LR"}
        return {
            "id": f"{self.run_id}:nan:{step}",
            "run_id": self.run_id,
            "step": step,
            "last_step": step,
            "resolved_step": None,
            "kind": "nan",
            "severity": "critical",
            "detector": "client.nan",
            "message": f"{what} is {_describe(value)} at step {step} (caught in the training process)",
            "evidence": {field: _describe(value)},
            "action": action,
            "acknowledged": False,
        }


class LocalEngine:
    """``losswatch.detectors.Engine`` in the background thread, for runs without a service.

    ``available`` is False when numpy or the detectors cannot be imported (then only NanWatch
    runs) or after the engine raised (it is then switched off, with one warning).
    """

    def __init__(self, run_id: str, meta: dict[str, Any] | None) -> None:
        self.available = False
        self.error: str | None = None
        try:
            from losswatch.detectors import Engine  # imports numpy
            from losswatch.detectors.types import Record
        except Exception as e:  # ImportError, or a detectors package that is not there yet
            self.error = f"{type(e).__name__}: {e}"
            return
        self._Record = Record
        self._engine = Engine(run_id=run_id, meta=meta)
        self._new_meta: dict[str, Any] | None = None
        self.available = True

    def set_meta(self, meta: dict[str, Any]) -> None:
        """New run metadata, applied before the next :meth:`update` (which runs in the sender's
        thread: the engine is only ever touched there)."""
        self._new_meta = dict(meta)

    def update(self, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict | None, str]:
        """Feed resolved records; return (changed alert dicts, recommendation dict, health)."""
        meta, self._new_meta = self._new_meta, None
        if meta is not None:
            self._engine.set_meta(meta)
        R = self._Record
        batch = [R(step=r["step"], loss=r.get("loss"), grad_norm=r.get("grad_norm"), lr=r.get("lr"),
                   val_loss=r.get("val_loss"), ts=r.get("ts"), extra=r.get("extra") or {})
                 for r in records]
        changed = self._engine.update_batch(batch)
        rec = self._engine.recommendation
        return ([a.to_dict() for a in changed], rec.to_dict() if rec is not None else None,
                self._engine.health)
