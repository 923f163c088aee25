"""Values a training loop hands to ``Monitor.log``: Python floats, numpy scalars, torch tensors.

The training thread must not pay for reading a tensor: on a GPU, ``float(t)`` or ``t.item()``
waits for every kernel queued before it (a host-device sync). So ``log()`` only keeps a detached
reference (:func:`hold`), and the background thread reads all the tensors of a batch at once
(:func:`resolve`): one ``torch.stack(...).tolist()`` per device, i.e. one sync per flush instead of
one per step, and not in the training thread.

torch is never imported here: a tensor is recognised by duck typing (its class lives in a module
called ``torch...`` and has ``detach``), so ``import losswatch.client`` stays cheap and works
without torch installed.
"""

from __future__ import annotations

import operator

from losswatch.detectors.wire import VALUE_FIELDS, encode_float

# typing costs ~3 ms to import; annotations are strings (PEP 563), so only checkers need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_FIELDS = VALUE_FIELDS


def is_tensor(v: Any) -> bool:
    """True for a torch tensor (or a subclass such as ``Parameter``), without importing torch."""
    cls = v.__class__
    return cls.__module__.startswith("torch") and hasattr(cls, "detach")


def hold(v: Any) -> Any:
    """What ``log()`` keeps for a value: the value itself, or a tensor detached from its graph.

    Detaching (no copy, no sync) stops a logged loss from keeping its autograd graph alive until
    the next flush; a tensor outside any graph (``requires_grad`` False: a grad-norm, an LR) is
    kept as it is, which saves the ~0.4 us a ``detach()`` costs. The tensor is read later, in the background thread: a tensor
    that the training loop modifies in place before the flush is read with its new value, so
    log a ``.clone()`` of such a tensor (an accumulator, a capturable optimizer's LR).
    """
    if getattr(v, "requires_grad", False):  # only a tensor in a graph needs (and has) detach
        return v.detach()
    return v


def to_float(v: Any) -> float | None:
    """One value as a float (None stays None); raises TypeError/ValueError for non-numbers."""
    if v is None:
        return None
    if v.__class__ is float:
        return v
    if isinstance(v, (bool, str, bytes)):
        raise TypeError(f"not a number: {v!r}")
    return float(v)


def _tensor_values(tensors: list[Any]) -> list[float | None]:
    """Read many one-value tensors with one stack and one transfer per (device, dtype, shape).

    One sync per group instead of one per value, and very little Python per tensor: this runs
    while the training thread may want the GIL back.
    """
    import torch  # only reached when the caller logged tensors, so torch is already loaded

    out: list[float | None] = [None] * len(tensors)
    groups: dict[Any, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype, t.shape), []).append(i)
    for (_, _, shape), idxs in groups.items():
        n = 1
        for d in shape:
            n *= d
        if n != 1:
            raise ValueError(f"a logged tensor must hold one value, got shape {tuple(shape)}")
        try:
            vals = torch.stack([tensors[i] for i in idxs]).reshape(-1).tolist()
        except Exception:  # an odd dtype or device: read them one by one (still off the hot path)
            vals = [float(tensors[i]) for i in idxs]
        for i, v in zip(idxs, vals):
            out[i] = float(v)
    return out


def resolve(raw: list[tuple]) -> tuple[list[dict[str, Any]], list[str]]:
    """Turn the tuples ``log()`` buffered into plain records with float values.

    Parameters
    ----------
    raw : list of tuple
        ``(step, loss, grad_norm, lr, val_loss, ts, extra_or_None)`` as appended by ``log()``.

    Returns
    -------
    records : list of dict
        ``{"step": int, "ts": float, "loss": float, ..., "extra": {...}}``; fields that were
        not logged are absent. Non-finite floats stay floats (the wire encoding comes later).
    problems : list of str
        One line per value or record that had to be dropped, ``"<kind>: <details>"`` (the kind,
        e.g. "bad step" or "bad loss", lets the caller warn once per kind).

    Examples
    --------
    >>> recs, problems = resolve([(3, 2.5, None, 0.1, None, 1.0, {"tok_s": 7})])
    >>> recs
    [{'step': 3, 'ts': 1.0, 'loss': 2.5, 'lr': 0.1, 'extra': {'tok_s': 7.0}}]
    """
    problems: list[str] = []
    # first pass: find the tensors, so they can all be read in one go per device
    tensor_refs: list[Any] = []
    tensor_slots: list[tuple[int, int, str | None]] = []  # (record index, field index, extra key)
    for r, row in enumerate(raw):
        for f in range(5):
            v = row[f]
            if v is not None and v.__class__ is not float and v.__class__ is not int and is_tensor(v):
                tensor_refs.append(v)
                tensor_slots.append((r, f, None))
        extra = row[6]
        if extra:
            for k, v in extra.items():
                if v is not None and v.__class__ is not float and is_tensor(v):
                    tensor_refs.append(v)
                    tensor_slots.append((r, 5, k))
    read: dict[tuple[int, int, str | None], Any] = {}
    if tensor_refs:
        try:
            vals = _tensor_values(tensor_refs)
        except Exception as e:
            problems.append(f"unreadable tensors: {e}")
            vals = []
            for t in tensor_refs:
                try:
                    vals.append(float(t))
                except Exception:
                    vals.append(None)
        read = dict(zip(tensor_slots, vals))

    records: list[dict[str, Any]] = []
    for r, row in enumerate(raw):
        step = read.get((r, 0, None), row[0])
        try:
            if isinstance(step, float) and step.is_integer():
                step = int(step)
            step = operator.index(step)
            if isinstance(step, bool) or step < 0:
                raise ValueError
        except Exception:
            problems.append(f"bad step: dropped a record; step must be a non-negative integer, got {step!r}")
            continue
        rec: dict[str, Any] = {"step": step, "ts": row[5]}
        for f, name in enumerate(_FIELDS, start=1):
            v = read.get((r, f, None), row[f])
            if v is None:
                continue
            try:
                rec[name] = to_float(v)
            except (TypeError, ValueError):
                problems.append(f"bad {name}: step {step}, {name}={v!r} is not a number; left out")
        extra = row[6]
        if extra:
            ex: dict[str, float] = {}
            for k, v in extra.items():
                v = read.get((r, 5, k), v)
                if v is None:
                    continue
                try:
                    ex[str(k)] = to_float(v)
                except (TypeError, ValueError):
                    problems.append(f"bad {k}: step {step}, {k}={v!r} is not a number; left out")
            if ex:
                rec["extra"] = ex
        records.append(rec)
    return records, problems


wire = encode_float  # a float for JSON: non-finite values travel as "NaN"/"Infinity"/"-Infinity"


def encode(rec: dict[str, Any]) -> dict[str, Any]:
    """A resolved record with non-finite values spelled as "NaN"/"Infinity"/"-Infinity"."""
    out = dict(rec)
    for name in _FIELDS:
        v = out.get(name)
        if v is not None:
            out[name] = wire(v)
    if "extra" in out:
        out["extra"] = {k: wire(v) for k, v in out["extra"].items()}
    return out


def is_finite(v: float | None) -> bool:
    """None counts as finite (not logged is not a NaN)."""
    return v is None or v - v == 0.0
