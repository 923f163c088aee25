"""Online training-health detectors: pure computation, numpy allowed, no I/O.

>>> from losswatch.detectors import Engine, Batch, Record, Alert, Action

The names below are resolved on first use (PEP 562), so that the standard-library modules of
this package (``nan_rule``, ``events``, ``types``) can be imported by the client without numpy.
"""

from __future__ import annotations

from importlib import import_module

# typing costs ~3 ms to import; annotations are strings (PEP 563), so only checkers need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Engine", "Batch", "Record", "Alert", "Action", "Detector"]

_WHERE = {"Engine": ".engine", "Batch": ".batch", "Record": ".types", "Alert": ".types",
          "Action": ".types", "Detector": ".base"}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(where, __name__), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
