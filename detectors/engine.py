"""The Engine: one run's detectors, fed records one at a time or in batches.

Contract: ``update(record)`` / ``update_batch(batch)`` return the alerts raised, escalated,
updated or resolved at those steps (snapshots; ``Alert.event`` says which; the same ``id``
replaces an older copy; ``Alert.incident`` groups the alerts of one incident, see incidents.py),
``recommendation`` is the action of the most severe active alert, the whole state goes to bytes
and back (JSON, no pickle) and a restored engine continues exactly like an uninterrupted one.
Records whose step is <= the last step seen are ignored (in-order stream only).

Both paths run the same per-step decision code on the same features (see features.py): the batch
path computes the shared statistics for the whole batch, asks each detector for a vectorised
screen of the rows where something can happen, and runs its Python decision code only there.
"""

from __future__ import annotations

import bisect
import inspect
import json
import math
import warnings
from typing import Any, Iterable

import numpy as np

try:
    import msgpack
except ImportError:  # a client-only install running the detectors locally: the state is JSON
    msgpack = None

from .base import Detector, _alert_from_state, _snapshot
from .batch import Batch
from .dead import DeadDetector
from .divergence import DivergenceDetector
from .early_stall import EarlyStallDetector
from .features import Features, FeatureTracker, initial_state
from .grad_explosion import GradExplosionDetector
from .grad_vanishing import GradVanishingDetector
from .incidents import IncidentBook, lowers_lr, withhold_raises
from .lr_anomaly import LRAnomalyDetector
from .nan import NaNDetector
from .objective import DEFAULT as DEFAULT_OBJECTIVE
from .objective import applies, objective_of, params_for
from .oscillation import OscillationDetector
from .overfitting import OverfittingDetector
from .plateau import PlateauDetector
from .schedule_monitor import ScheduleMonitor
from .sgd_efficiency import SGDEfficiencyDetector
from .slow_progress import SlowProgressDetector
from .slow_start import SlowStartDetector
from .spike import SpikeDetector
from .types import SEVERITY_RANK, Action, Alert, Record
from .val_spike import ValSpikeDetector

STATE_VERSION = 1

#: The built-in detectors, in evaluation order (also the order of changes within one step).
DEFAULT_DETECTORS: tuple[type[Detector], ...] = (
    NaNDetector, DivergenceDetector, SpikeDetector, ValSpikeDetector, GradExplosionDetector, GradVanishingDetector,
    EarlyStallDetector, LRAnomalyDetector, OscillationDetector, PlateauDetector, SlowProgressDetector,
    SlowStartDetector, OverfittingDetector, DeadDetector,
)

#: Detectors an engine adds when the run metadata asks for them (``cls.from_meta(meta)``), each
#: with the metadata keys it is built from: changing those keys rebuilds it (fresh state).
META_DETECTORS: tuple[tuple[type[Detector], tuple[str, ...]], ...] = (
    (ScheduleMonitor, ("lr_schedule",)),
    (SGDEfficiencyDetector, ("optimizer", "momentum")),
)

#: When two active alerts have the same severity, the recommendation comes from the kind that
#: is listed first (the more urgent problem).
KIND_PRIORITY = {k: i for i, k in enumerate((
    "nan", "divergence", "dead", "lr_anomaly", "grad_explosion", "oscillation", "spike", "overfitting",
    "plateau", "grad_vanishing"))}


def _value(v: Any) -> float | None:
    """A record field as a float (None = not logged). Never raises: junk counts as NaN."""
    if v is None or type(v) is float:
        return v
    if isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return math.nan


class Engine:
    """All detectors of one run.

    Parameters
    ----------
    run_id : str
    meta : dict, optional
        Run metadata. ``meta["lr_schedule"]`` (``{"name": ..., params...}``) adds the LR
        schedule monitor; ``meta["optimizer"] == "sgd"`` (with ``meta["momentum"]``) adds the
        SGD-efficiency rule (see ``META_DETECTORS``); ``meta["objective"]`` ``"adversarial"``
        or ``"reinforcement"`` keeps only the detectors whose facts hold for a loss that is not
        driven to a floor (see :mod:`~losswatch.detectors.objective`; an unknown value is read
        as the default, ``"minimised"``, with a warning: bad metadata must not stop monitoring).
    params : dict, optional
        Overrides of detector defaults: ``{"features": {...}, "<detector name>": {...}}``.

    Examples
    --------
    >>> from losswatch.detectors.types import Record
    >>> eng = Engine("demo")
    >>> alerts = []
    >>> for step, loss in enumerate([2.5, 2.4, 2.6, 3.1, 4.2, float("nan")]):
    ...     alerts += eng.update(Record(step=step, loss=loss))
    >>> [(a.kind, a.step, a.action.type) for a in alerts]
    [('divergence', 4, 'scale_lr'), ('nan', 5, 'rollback')]
    >>> eng.health, eng.recommendation.type
    ('critical', 'rollback')
    """

    #: Batches of at most this many records go through :meth:`update` one record at a time: the
    #: vectorised pass has a fixed cost of ~330 us per call (numpy calls per feature and detector),
    #: as much as ~20 records through the one-record path (~16 us each; measured on a healthy run,
    #: bench/speed.py). Both paths give the same alerts, so this is a speed choice only; the
    #: service's small-batch regime (many clients flushing a few steps) is what it serves.
    SMALL_BATCH = 16

    def __init__(self, run_id: str, meta: dict[str, Any] | None = None,
                 params: dict[str, dict[str, Any]] | None = None) -> None:
        self.run_id = run_id
        self.meta: dict[str, Any] = dict(meta or {})
        objective = _objective(self.meta, warn=True)
        self.params: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (params or {}).items()}
        self._features = FeatureTracker(self.params.get("features"))
        self._detectors: list[Detector] = []
        for cls in DEFAULT_DETECTORS:
            if applies(cls, objective):
                self._add(cls(**self._params_of(cls, objective)))
        self._add_from_meta(cls for cls, _ in META_DETECTORS)
        self._last_step: int | None = None
        self._incidents = IncidentBook()

    # -- set-up --------------------------------------------------------------------------------
    def _params_of(self, cls: type[Detector], objective: str) -> dict[str, Any]:
        """A detector's parameters: those the run's objective sets, then the engine's overrides."""
        return {**params_for(cls.name, objective), **self.params.get(cls.name, {})}

    def _add(self, det: Detector) -> None:
        det.run_id = self.run_id
        self._detectors.append(det)

    def _add_from_meta(self, classes: Iterable[type[Detector]]) -> None:
        objective = _objective(self.meta)
        for cls in classes:
            if not applies(cls, objective):
                continue
            try:
                det = cls.from_meta(self.meta, **self._params_of(cls, objective))
            except Exception:  # noqa: BLE001 - bad metadata must not break monitoring
                det = None
            if det is not None:
                self._add(det)

    def set_meta(self, meta: dict[str, Any]) -> list[Alert]:
        """Replace the run metadata; return the alert changes that makes. A detector built from
        metadata whose keys changed (a new ``lr_schedule``, another optimizer) is rebuilt from
        the new values, with fresh state. A new ``objective`` takes off the detectors it excludes,
        adds with fresh state those it includes (built-in or asked for by the metadata) and gives
        one that stays the parameters it sets (keeping its state and alert). The active alert of
        a detector taken off or rebuilt is resolved at the last step: that change is returned, so
        no consumer keeps it open."""
        old, new = self.meta, dict(meta or {})
        objective, was = _objective(new, warn=True), _objective(old)
        self.meta = new
        rebuilt = tuple(cls for cls, keys in META_DETECTORS if any(old.get(k) != new.get(k) for k in keys))

        def stays(d: Detector) -> bool:
            return not isinstance(d, rebuilt) and applies(type(d), objective)

        gone = [d for d in self._detectors if not stays(d)]
        self._detectors = [self._retuned(d, objective, was) for d in self._detectors if stays(d)]
        changes: list[Alert] = []
        for d in gone:
            if d.alert is not None:
                # (an open alert was raised on a record: the engine has a last step)
                step = self._last_step if self._last_step is not None else d.alert.step
                d.close_episode(step, "the run's metadata changed: this detector is off or starts afresh")
                changes += d.drain_changes()
        self._add_missing()
        return self._incidents.assign(changes) if changes else changes

    def _retuned(self, d: Detector, objective: str, was: str) -> Detector:
        """``d`` with the parameters the new objective sets, keeping its state and its open alert
        (it still runs: a gradient still exploded, a NaN is still the same episode)."""
        if not (params_for(d.name, objective) or params_for(d.name, was)):
            return d  # neither objective sets its parameters
        cls = type(d)
        params = cls(**self._params_of(cls, objective)).params
        if d.params == params:  # (a state saved before the objective had a meaning may differ)
            return d
        out = _restore_detector(cls, {**d.to_state(), "params": params})
        out.run_id = self.run_id
        return out

    def _add_missing(self) -> None:
        """Add, with fresh state, each detector the run's metadata includes and the engine lacks
        (built-in ones in their place in the evaluation order, then those the metadata asks for)."""
        objective = _objective(self.meta)
        have = {d.name for d in self._detectors}
        for cls in DEFAULT_DETECTORS:
            if cls.name not in have and applies(cls, objective):
                self._add(cls(**self._params_of(cls, objective)))
        self._add_from_meta(cls for cls, _ in META_DETECTORS if cls.name not in have)
        order = {c.name: k for k, c in enumerate(DEFAULT_DETECTORS)}
        self._detectors.sort(key=lambda d: order.get(d.name, len(order)))

    # -- state of the run ----------------------------------------------------------------------
    @property
    def last_step(self) -> int | None:
        return self._last_step

    @property
    def active_alerts(self) -> list[Alert]:
        out = [_snapshot(d.alert) for d in self._detectors if d.alert is not None]
        for a in out:
            a.incident = self._incidents.incident_of(a)
        withhold_raises(out)
        return out

    @property
    def spike_rate(self) -> float | None:
        """Share of the run's last records (the spike rule's ``window``, 128) that were loss
        spikes undoing part of the progress (spike.py): exported per run, a rate a person can
        compare with the run's own past, where one spike is only a note."""
        for d in self._detectors:
            if isinstance(d, SpikeDetector):
                return d.rate(self._features.state["rec"])
        return None  # the spike detector is off for this run's objective: no rate, not a rate of 0

    def _most_severe(self, min_rank: int) -> Alert | None:
        best: Alert | None = None
        best_key: tuple = ()
        for d in self._detectors:
            a = d.alert
            if a is None or SEVERITY_RANK.get(a.severity, 0) < min_rank:
                continue
            key = (SEVERITY_RANK.get(a.severity, 0), -KIND_PRIORITY.get(a.kind, 99), a.last_step or 0)
            if best is None or key > best_key:
                best, best_key = a, key
        return best

    @property
    def recommendation(self) -> Action | None:
        """Action of the most severe active warning/critical alert; None when healthy. An LR
        raise never wins over an alert that lowers the LR (incidents.py, "One verdict")."""
        a = self._most_severe(SEVERITY_RANK["warning"])
        if a is None:
            return None
        if a.action.direction == "up":
            a = next((d.alert for d in self._detectors if d.alert is not None and lowers_lr(d.alert)), a)
        return Action(a.action.type, dict(a.action.params), a.action.reason)

    @property
    def health(self) -> str:
        a = self._most_severe(SEVERITY_RANK["warning"])
        return "ok" if a is None else a.severity

    # -- feeding -------------------------------------------------------------------------------
    def update(self, record: Record) -> list[Alert]:
        """Feed one record; return the alert changes at this step."""
        return self._advance(record.step, _value(record.loss), _value(record.grad_norm),
                             _value(record.lr), _value(record.val_loss))

    def _advance(self, step: Any, loss: float | None, gn: float | None, lr: float | None,
                 val: float | None) -> list[Alert]:
        """The one-record path on already-coerced values (None = not logged)."""
        if type(step) is not int:
            step = int(step)  # numpy integers, integral floats; anything else is the caller's bug
        if self._last_step is not None and step <= self._last_step:
            return []
        self._last_step = step
        f = self._features.advance_one(step, loss, gn, lr, val)
        changes: list[Alert] = []
        for d in self._detectors:
            d.step(f, 0)
            if d._changes:
                changes.extend(d.drain_changes())
        if changes:
            changes = self._incidents.assign(changes)
        return changes

    def update_batch(self, batch: Batch | Iterable[Record]) -> list[Alert]:
        """Feed many records (vectorised); same changes as feeding them one at a time."""
        if not isinstance(batch, Batch):
            batch = Batch.from_records(batch)
        n = len(batch)
        if n == 0:
            return []
        if n <= self.SMALL_BATCH:
            changes: list[Alert] = []
            for row in batch.rows():  # the columns' values, not Record objects re-coerced
                changes.extend(self._advance(*row))
            return changes
        steps = batch.step
        first = -1 if self._last_step is None else self._last_step
        prior = np.maximum.accumulate(np.concatenate(([first], steps[:-1])))
        keep = steps > prior
        if not keep.all():
            batch = batch.take(keep)
            n = len(batch)
            if n == 0:
                return []
        self._last_step = int(batch.step[-1])
        f = self._features.advance_batch(batch)
        tagged: list[tuple[int, int, int, Alert]] = []
        for di, d in enumerate(self._detectors):
            _drive(d, f, di, tagged)
        if len(tagged) > 1:
            tagged.sort(key=lambda t: t[:3])
        changes = [t[3] for t in tagged]
        if changes:
            changes = self._incidents.assign(changes)
        return changes

    # -- persistence ---------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The whole state as bytes: MessagePack (floats as their 8 bytes, so NaN and infinities
        come back bit for bit; the Redis store writes this on every batch and msgpack encodes it
        ~6x faster than the standard library's JSON), or JSON (NaN and infinities as JSON's
        NaN/Infinity) without msgpack installed or for what MessagePack cannot hold (an integer
        beyond 64 bits, a lone surrogate in the metadata). :func:`decode_state` reads both."""
        doc = {
            "version": STATE_VERSION, "run_id": self.run_id, "meta": self.meta,
            "params": self.params, "last_step": self._last_step,
            "features": self._features.to_state(),
            "detectors": [{"name": d.name, **d.to_state()} for d in self._detectors],
            "incidents": self._incidents.to_state(),
        }
        if msgpack is not None:
            try:
                return msgpack.packb(doc, default=_msgpack_default)
            except (OverflowError, UnicodeEncodeError, ValueError):
                pass
        return json.dumps(doc, allow_nan=True, separators=(",", ":"), default=_json_default).encode()

    @classmethod
    def from_bytes(cls, b: bytes) -> "Engine":
        """Rebuild an engine saved by :meth:`to_bytes` (either encoding)."""
        doc = decode_state(b)
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported engine state version {doc.get('version')!r}")
        eng = cls.__new__(cls)
        eng.run_id = doc["run_id"]
        eng.meta = doc["meta"]
        eng.params = doc["params"]
        eng._last_step = doc["last_step"]
        eng._incidents = IncidentBook.from_state(doc.get("incidents"))  # absent in older states
        feats = doc["features"]
        # statistics added by a newer version start from their initial value
        eng._features = FeatureTracker.from_state(
            {"params": feats["params"], "state": {**initial_state(), **feats["state"]}})
        registry: dict[str, type[Detector]] = {c.name: c for c in DEFAULT_DETECTORS}
        registry.update((c.name, c) for c, _ in META_DETECTORS)
        eng._detectors = []
        for dd in doc["detectors"]:
            dcls = registry.get(dd["name"])
            if dcls is None:  # a plug-in that is not installed here: skip it
                continue
            # as saved (a state saved before "objective" had a meaning keeps all its detectors
            # until the run's metadata changes)
            eng._add(_restore_detector(dcls, dd))
        # a detector this version has and the saved state had not: starts fresh, in its place
        eng._add_missing()
        return eng


def _objective(meta: dict[str, Any], warn: bool = False) -> str:
    """The run's objective; an unknown one reads as the default (with a warning when ``warn``:
    the engine is built or given new metadata; a saved state loads silently as it ran)."""
    try:
        return objective_of(meta)
    except ValueError as e:
        if warn:
            warnings.warn(f"{e}; the loss is read as minimised", stacklevel=3)
        return DEFAULT_OBJECTIVE


def _restore_detector(dcls: type[Detector], dd: dict[str, Any]) -> Detector:
    """Rebuild one detector from its saved state, tolerating a state saved by another version:
    unknown parameters are dropped, and state that does not fit restarts that detector fresh
    (its active alert is kept)."""
    try:
        accepted = inspect.signature(dcls.__init__).parameters
        params = {k: v for k, v in (dd.get("params") or {}).items() if k in accepted}
    except (TypeError, ValueError):
        params = dict(dd.get("params") or {})
    det = dcls(**params)
    try:
        det.load_state(dd)
    except (KeyError, TypeError, ValueError):
        det = dcls(**params)
        a = dd.get("alert")
        if a is not None:
            try:
                det.alert = _alert_from_state(a)
            except (KeyError, TypeError):
                det.alert = None
    return det


def decode_state(b: bytes) -> dict[str, Any]:
    """The state document of :meth:`Engine.to_bytes`: JSON (it starts with "{"; states written
    before MessagePack, or without it) or MessagePack (a map: its first byte is 0x80-0x8f, 0xde
    or 0xdf). Keys that are not strings stay what they were saved as."""
    if b[:1] == b"{" or msgpack is None:
        return json.loads(b)
    return msgpack.unpackb(b, strict_map_key=False)


def _msgpack_default(o: Any) -> Any:
    """As :func:`_json_default`, but an integer beyond 64 bits (msgpack asks about those too)
    raises, so the state goes as JSON rather than with that number as text."""
    if isinstance(o, int):
        raise OverflowError("an integer beyond 64 bits")
    return _json_default(o)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def _drive(d: Detector, f: Features, di: int, out: list[tuple[int, int, int, Alert]]) -> None:
    """Run detector ``d`` over the rows of ``f`` where its screens say something can happen.

    Screens are re-evaluated whenever the detector's episode changes (they may depend on it).
    """
    n = f.n
    i = 0
    idx: list[int] | None = None
    fresh = False
    idle_idx: list[int] | None = None
    idle_known = False
    while i < n:
        if not fresh:
            if d.alert is not None:
                mask = d.active_screen(f)
                idx = None if mask is None else np.flatnonzero(mask).tolist()
            elif d.static_screen and idle_known:
                idx = idle_idx
            else:
                mask = d.screen(f)
                idx = None if mask is None else np.flatnonzero(mask).tolist()
                if d.static_screen:
                    idle_idx, idle_known = idx, True
            fresh = True
        if idx is None:
            j = i
        else:
            p = bisect.bisect_left(idx, i)
            if p == len(idx):
                break
            j = idx[p]
        d.step(f, j)
        if d._changes:
            for k, a in enumerate(d.drain_changes()):
                out.append((j, di, k, a))
            fresh = False
        i = j + 1
