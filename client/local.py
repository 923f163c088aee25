"""Detection inside the training process: the NaN check, and the full detectors without a service.

:class:`NanWatch` runs always, with or without a service: a non-finite loss or grad-norm is the
one condition that must be known on the very step, without waiting for a network round trip.
It judges each record by the one NaN rule (:mod:`losswatch.detectors.nan_rule`, standard library
only, shared with the service's detector), so a NaN gets the same severity and advice whoever
sees it first, and keeps one episode at a time, raised, escalated and resolved like the
detector's.

:class:`LocalEngine` runs when no service URL is set: it feeds ``losswatch.detectors.Engine``
in the background thread when numpy (and the detectors) can be imported, and is absent otherwise
(the NaN check alone then). Nothing here imports numpy.
"""

from __future__ import annotations

import threading

from losswatch.detectors.nan_rule import GN_PATIENCE, LOSS, LOSS_JUMP, RECOVER, classify, is_bad

# typing costs ~3 ms to import; annotations are strings (PEP 563), so only checkers need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _describe(v: float) -> str:
    return "NaN" if v != v else ("+inf" if v > 0 else "-inf")


class NanWatch:
    """Episodes of non-finite loss / grad-norm, as alert dicts shaped like ``Alert.to_dict()``.

    One episode at a time (kind "nan", id ``<run>:nan:<first step>``, like the service's): it is
    raised by the first non-finite loss or grad-norm with the rule's severity, escalated (same id)
    when a later record meets a critical condition, and resolved after ``RECOVER`` records without
    a non-finite value (the last with a finite loss).

    Parameters
    ----------
    run_id : str
    gn_patience : int
        Non-finite grad-norms in a row that make the episode critical.

    Examples
    --------
    >>> w = NanWatch("r1")
    >>> a = w.check(7, float("nan"), 1.0, in_log=True)
    >>> a["id"], a["kind"], a["severity"], a["action"]["type"], a["action"]["to_step"]
    ('r1:nan:7', 'nan', 'critical', 'rollback', 6)
    >>> w.check(8, 2.0, float("inf")) is None      # same episode, already critical: no event
    True
    >>> [c["resolved_step"] for c in w.observe([{"step": s, "loss": 2.0} for s in range(9, 15)])]
    [13]
    """

    def __init__(self, run_id: str, gn_patience: int = GN_PATIENCE) -> None:
        self.run_id = run_id
        self.gn_patience = gn_patience
        self._open: dict[str, Any] | None = None
        self._last_finite: int | None = None  # last step whose loss was finite
        # the losses observed in order (their grad-norms finite or not), as the detectors' features
        # read them: the highest finite one, which the rule compares a loss beside a non-finite
        # grad-norm with, the step of the last finite one (the rollback's target then), and the
        # last step read (a step at or below it is one the detectors skip: a repeat, or a step
        # re-logged after a rollback, where the highest loss stays the one from before it)
        self._loss_top: float | None = None
        self._loss_before_step: int | None = None
        self._read_step: int | None = None
        self._gn_in_a_row = 0  # records in a row with a non-finite grad-norm
        self._gn_first_step: int | None = None  # the first of them
        self._since_bad = 0  # records since the last non-finite value
        self._lock = threading.Lock()  # check() runs in the training thread, observe() in the worker's

    @property
    def active(self) -> bool:
        return self._open is not None

    def after_fork_in_child(self) -> None:
        """A forked child gets a fresh lock (the parent's may have been copied held)."""
        self._lock = threading.Lock()

    @property
    def critical(self) -> bool:
        """An open episode the rule calls critical (a NaN loss, or grad-norms that stay NaN)."""
        a = self._open
        return a is not None and a["severity"] == "critical"

    def check(self, step: int, loss: Any, grad_norm: Any, in_log: bool = False) -> dict[str, Any] | None:
        """Judge one record with a non-finite value; return the alert raised or escalated (a
        copy), or None when the open episode already says as much.

        ``in_log``: called from ``log()`` on the step's values; only Python floats are judged
        there (a tensor is read later, in the background, without a host-device sync). log() does
        not see every record, so it counts no grad-norm streak (one record's verdict only);
        :meth:`observe` sees them all, in order, and does.
        """
        if in_log:  # a tensor is read later, off the hot path: comparing it here would sync the GPU
            loss = loss if loss.__class__ is float else None
            grad_norm = grad_norm if grad_norm.__class__ is float else None
        gn_bad = is_bad(grad_norm)
        with self._lock:
            if in_log:
                in_a_row = 1 if gn_bad else 0
            else:
                self._since_bad = 0
                if gn_bad:
                    self._gn_in_a_row += 1
                    if self._gn_in_a_row == 1:
                        self._gn_first_step = step
                else:
                    self._gn_in_a_row = 0
                in_a_row = self._gn_in_a_row
            # log() judges its one record alone: the losses the background has read may be many
            # steps old there; observe() judges a loss against those before it, in order
            verdict = classify(loss, gn_bad, in_a_row, self.gn_patience,
                               loss_top=None if in_log else self._loss_top)
            if verdict is None:
                return None
            a = self._open
            if a is not None:
                if isinstance(step, int) and step > a["last_step"]:
                    a["last_step"] = step
                if verdict.severity != "critical" or a["severity"] == "critical":
                    return None
            value = loss if verdict.signal == LOSS else grad_norm
            if gn_bad and in_log:
                self._gn_first_step = step  # log()'s own one-record verdict starts here
            new = self._alert(step, verdict, value, in_log, loss)
            if a is not None:  # escalated: the same episode, now critical
                new.update(id=a["id"], step=a["step"], last_step=max(a["last_step"], step))
            self._open = new
            return dict(new)

    def observe(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Check resolved records in order; return alerts raised, escalated or resolved (copies)."""
        changed: list[dict[str, Any]] = []
        for rec in records:
            step = rec["step"]
            loss = rec.get("loss")
            gn = rec.get("grad_norm")
            if is_bad(loss) or is_bad(gn):
                new = self.check(step, loss, gn)
                if new is not None:
                    changed.append(new)
                self._read(step, loss)
                continue
            self._since_bad += 1
            self._gn_in_a_row = 0
            if loss is None:
                continue
            self._last_finite = step
            self._read(step, loss)
            with self._lock:
                a = self._open
                if a is not None and step > a["step"] and self._since_bad >= RECOVER:
                    self._open = None
                    changed.append(dict(a, resolved_step=step))
        return changed

    def _read(self, step: Any, loss: Any) -> None:
        """Keep the losses the rule compares with, as the detectors' features read them."""
        if not isinstance(step, int) or (self._read_step is not None and step <= self._read_step):
            return
        self._read_step = step
        if loss is None or is_bad(loss):
            return
        self._loss_before_step = step
        if self._loss_top is None or loss > self._loss_top:
            self._loss_top = loss

    def _alert(self, step: int, verdict: Any, value: float, in_log: bool, loss: Any = None) -> dict[str, Any]:
        what = verdict.signal
        message = f"{what} is {_describe(value)} at step {step} (caught in the training process)"
        if verdict.action == "none":
            action = {"type": "none",
                      "reason": f"one step with a {what} of {_describe(value)} and a finite loss: with "
                                f"fp16 a dynamic loss scaler skips such a step and lowers its scale, "
                                f"routinely. Nothing to do unless it repeats."}
        elif what == LOSS:
            last_ok = self._last_finite
            if (in_log or last_ok is None) and isinstance(step, int) and step > 0:
                # log() runs ahead of the background thread: the previous step was finite (else
                # this episode would already be open)
                last_ok = step - 1
            if last_ok is not None:
                action = {"type": "rollback", "to_step": last_ok,
                          "reason": f"the loss is {_describe(value)} at step {step}: the weights are "
                                    f"no longer usable; roll back to the checkpoint at or before step "
                                    f"{last_ok} (finite loss) and lower the LR"}
            else:
                action = {"type": "stop",
                          "reason": f"the loss is {_describe(value)} at step {step}, before any "
                                    f"finite loss was seen: stop and check the data, the loss and the LR"}
        elif what == LOSS_JUMP:  # the rule asked for a highest loss before (positive) and this finite loss
            to = self._loss_before_step if self._loss_before_step is not None else 0
            top = self._loss_top if self._loss_top is not None else float("nan")
            message = (f"grad-norm is {_describe(value)} at step {step} with the loss at {loss:.4g}, "
                       f"{loss / top:.3g}x the highest loss before it (caught in the training process)")
            action = {"type": "rollback", "to_step": to,
                      "reason": f"the loss is {loss / top:.3g}x anything the run logged before ({top:.4g}), "
                                f"beside a non-finite gradient at step {step}: a loss scaler's overflow "
                                f"leaves the loss where it was, so the weights themselves blew up; roll back "
                                f"to the checkpoint at or before step {to}, then restart with a lower LR"}
        else:
            first = self._gn_first_step if self._gn_first_step is not None else step
            to = first - 1 if isinstance(first, int) and first > 0 else 0
            action = {"type": "rollback", "to_step": to,
                      "reason": f"{what} ({_describe(value)}) at step {step}: the loss scaler is not "
                                f"recovering and the updates are garbage; roll back to the checkpoint "
                                f"at or before step {to}, then lower the LR or train in bf16"}
        return {
            "id": f"{self.run_id}:nan:{step}",
            "run_id": self.run_id,
            "step": step,
            "last_step": step,
            "resolved_step": None,
            "kind": "nan",
            "severity": verdict.severity,
            "detector": "client.nan",
            "message": message,
            "evidence": {"signal": what, "value": _describe(value)},
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
        self._Engine = Engine
        self._engine = Engine(run_id=run_id, meta=meta)
        self._new_meta: dict[str, Any] | None = None
        # checkpoints and rewinds (Monitor.checkpoint / mark_rewind), set in the training thread
        # and carried out here, in the order of the records
        self._snap_due: list[int] = []  # checkpoint steps whose engine state is still to be kept
        self._snapshots: dict[int, bytes] = {}  # checkpoint step -> the engine's state then
        self._rewind: int | None = None  # rolled back to this step: restore before the next re-logged step
        self._last_step: int | None = None
        self.available = True

    def snapshot_at(self, step: int) -> None:
        """Keep the detectors' state as it is before the record of ``step`` (a checkpoint's)."""
        self._snap_due.append(step)

    def rewind_to(self, step: int) -> None:
        """The run went back to ``step``: before the first record that repeats a step, the
        detectors return to their state at the latest checkpoint at or before it."""
        self._rewind = step

    def _feed(self, batch: list, changed: list) -> None:
        if batch:
            changed += self._engine.update_batch(batch)
            batch.clear()

    def _restore(self, to_step: int) -> list[dict[str, Any]]:
        """Go back to the snapshot at or before ``to_step``; the alerts active now that were not
        then come back resolved (the records that raised them are undone)."""
        keys = [k for k in self._snapshots if k <= to_step]
        if not keys:
            return []
        before = {a.id: a for a in self._engine.active_alerts}
        meta = self._engine.meta
        self._engine = self._Engine.from_bytes(self._snapshots[max(keys)])
        self._engine.set_meta(meta)  # the run's metadata now, not the checkpoint's (its objective)
        for k in [k for k in self._snapshots if k > to_step]:
            del self._snapshots[k]  # states of a future that was discarded
        after = {a.id for a in self._engine.active_alerts}
        out = []
        for aid, a in before.items():
            if aid not in after:
                d = a.to_dict()
                d.update(resolved_step=to_step, event="resolved")
                out.append(d)
        return out

    def set_meta(self, meta: dict[str, Any]) -> None:
        """New run metadata, applied before the next :meth:`update` (which runs in the worker's
        thread: the engine is only ever touched there)."""
        self._new_meta = dict(meta)

    @property
    def meta_pending(self) -> bool:
        """New metadata waits for the next :meth:`update` (one with no record applies it)."""
        return self._new_meta is not None

    def update(self, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict | None, str]:
        """Feed resolved records; return (changed alert dicts, recommendation dict, health)."""
        meta, self._new_meta = self._new_meta, None
        # alerts of detectors the new metadata took off or rebuilt come back resolved
        taken_off = [a.to_dict() for a in self._engine.set_meta(meta)] if meta is not None else []
        R = self._Record
        if not self._snap_due and self._rewind is None:  # the usual case: one batch
            batch = [R(step=r["step"], loss=r.get("loss"), grad_norm=r.get("grad_norm"), lr=r.get("lr"),
                       val_loss=r.get("val_loss"), ts=r.get("ts"), extra=r.get("extra") or {})
                     for r in records]
            changed = self._engine.update_batch(batch)
            restored: list[dict[str, Any]] = []
            if records:
                self._last_step = records[-1]["step"]
        else:
            changed, restored = [], []
            batch: list = []
            for r in records:
                step = r["step"]
                if self._rewind is not None and self._last_step is not None and step <= self._last_step:
                    self._feed(batch, changed)
                    restored += self._restore(self._rewind)
                    self._rewind = None
                while self._snap_due and self._snap_due[0] <= step:
                    self._feed(batch, changed)
                    self._snapshots[self._snap_due.pop(0)] = self._engine.to_bytes()
                    while len(self._snapshots) > 8:
                        del self._snapshots[min(self._snapshots)]
                batch.append(R(step=step, loss=r.get("loss"), grad_norm=r.get("grad_norm"), lr=r.get("lr"),
                               val_loss=r.get("val_loss"), ts=r.get("ts"), extra=r.get("extra") or {}))
                self._last_step = step
            self._feed(batch, changed)
        rec = self._engine.recommendation
        return (taken_off + restored + [a.to_dict() for a in changed], rec.to_dict() if rec is not None else None,
                self._engine.health)
