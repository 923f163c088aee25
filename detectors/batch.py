"""A columnar block of step records: what the engine's vectorised path consumes.

``None`` in a column means "not logged at that step"; ``float('nan')`` is a NaN *value*.
The two stay distinct (``has_*`` masks) because a NaN loss is an alarm and a missing one is not.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from .types import Record
from .wire import VALUE_FIELDS

SIGNALS = VALUE_FIELDS


def _float_or_nan(v: Any) -> float:
    if isinstance(v, bool):
        raise TypeError("a boolean is not a number")
    return float(v)


def _column(values: Any, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64 with NaN where missing, bool mask of logged entries)."""
    if values is None:
        return np.full(n, np.nan), np.zeros(n, dtype=bool)
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        if values.shape != (n,):
            raise ValueError(f"column {name!r} has shape {values.shape}, expected ({n},)")
        return values.astype(np.float64), np.ones(n, dtype=bool)
    vals = list(values)
    if len(vals) != n:
        raise ValueError(f"column {name!r} has {len(vals)} values, expected {n}")
    has = np.fromiter((v is not None for v in vals), dtype=bool, count=n)
    try:
        arr = np.fromiter((math.nan if v is None else _float_or_nan(v) for v in vals),
                          dtype=np.float64, count=n)
    except (TypeError, ValueError) as e:
        raise ValueError(f"column {name!r}: {e}") from None
    return arr, has


def column_array(col: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """A column of checked values (floats, None where not logged) as (float64 values with NaN
    where not logged, mask of logged entries), without a Python loop in the common case of a
    column that is fully logged or not logged at all."""
    n = len(col)
    if None not in col:
        return np.array(col, dtype=np.float64), np.ones(n, dtype=bool)
    if col.count(None) == n:
        return np.full(n, np.nan), np.zeros(n, dtype=bool)
    # numpy turns None into NaN with dtype float64; the mask keeps "not logged" apart from NaN
    return np.array(col, dtype=np.float64), np.array([v is not None for v in col], dtype=bool)


class Batch:
    """Records of one run as columns (numpy arrays).

    Attributes
    ----------
    step : int64 array
    loss, grad_norm, lr, val_loss : float64 arrays (NaN where missing or NaN)
    has_loss, has_grad_norm, has_lr, has_val_loss : bool arrays (True where logged)

    Examples
    --------
    >>> b = Batch.from_columns(step=[1, 2, 3], loss=[2.0, None, float("nan")])
    >>> len(b), b.has_loss.tolist()
    (3, [True, False, True])
    >>> [r.loss for r in b.records()][:2]
    [2.0, None]
    """

    __slots__ = ("step", "loss", "grad_norm", "lr", "val_loss",
                 "has_loss", "has_grad_norm", "has_lr", "has_val_loss", "_lists")

    _lists: tuple[list[int], list[float | None], list[float | None], list[float | None],
                  list[float | None]] | None

    def __init__(self, step: np.ndarray, cols: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.step = step
        for name in SIGNALS:
            v, h = cols[name]
            setattr(self, name, v)
            setattr(self, "has_" + name, h)
        self._lists = None

    @classmethod
    def from_lists(cls, step: list[int], loss: list[float | None], grad_norm: list[float | None],
                   lr: list[float | None], val_loss: list[float | None]) -> "Batch":
        """Columns that are already checked (int steps >= 0; floats, None where not logged), as a
        service's parser produces them: not validated again, and kept as lists until a column is
        read as an array. The engine feeds a small batch record by record from the lists
        (:meth:`rows`), so a batch of a few records never pays for numpy arrays."""
        b = cls.__new__(cls)
        b._lists = (step, loss, grad_norm, lr, val_loss)
        return b

    def __getattr__(self, name: str) -> np.ndarray:
        # only reached for an unset slot: the arrays of a batch built by from_lists, made now
        lists = object.__getattribute__(self, "_lists")
        if lists is None or name not in Batch.__slots__:
            raise AttributeError(name)
        step, *values = lists
        self.step = np.array(step, dtype=np.int64)
        for sig, col in zip(SIGNALS, values):
            v, h = column_array(col)
            setattr(self, sig, v)
            setattr(self, "has_" + sig, h)
        return object.__getattribute__(self, name)

    def __len__(self) -> int:
        if self._lists is not None:
            return len(self._lists[0])
        return int(self.step.shape[0])

    @classmethod
    def from_columns(cls, step: Sequence[int] | np.ndarray, loss: Any = None, grad_norm: Any = None,
                     lr: Any = None, val_loss: Any = None) -> "Batch":
        """Build from columns (lists or arrays; None entries = not logged)."""
        steps = list(step.tolist() if isinstance(step, np.ndarray) else step)
        for s in steps:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                if isinstance(s, float) and s.is_integer() and s >= 0:
                    continue
                raise ValueError(f"step must be a non-negative integer, got {s!r}")
        n = len(steps)
        st = np.array(steps, dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
        cols = {"loss": _column(loss, n, "loss"), "grad_norm": _column(grad_norm, n, "grad_norm"),
                "lr": _column(lr, n, "lr"), "val_loss": _column(val_loss, n, "val_loss")}
        return cls(st, cols)

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> "Batch":
        """Build from Record objects (or dicts accepted by ``Record.from_dict``)."""
        recs = [r if isinstance(r, Record) else Record.from_dict(r) for r in records]
        return cls.from_columns(step=[r.step for r in recs], loss=[r.loss for r in recs],
                                grad_norm=[r.grad_norm for r in recs], lr=[r.lr for r in recs],
                                val_loss=[r.val_loss for r in recs])

    def take(self, mask: np.ndarray) -> "Batch":
        """The rows where ``mask`` is True."""
        cols = {n: (getattr(self, n)[mask], getattr(self, "has_" + n)[mask]) for n in SIGNALS}
        return Batch(self.step[mask], cols)

    def rows(self) -> list[tuple[int, float | None, float | None, float | None, float | None]]:
        """``(step, loss, grad_norm, lr, val_loss)`` per row as Python values (None where not
        logged)."""
        if self._lists is not None:
            return list(zip(*self._lists))
        cols = [[v if h else None for v, h in zip(getattr(self, n).tolist(),
                                                   getattr(self, "has_" + n).tolist())]
                for n in SIGNALS]
        return list(zip(self.step.tolist(), *cols))

    def records(self) -> list[Record]:
        """Back to Record objects (None where not logged)."""
        return [Record(step=s, loss=x, grad_norm=g, lr=r, val_loss=v)
                for s, x, g, r, v in self.rows()]
