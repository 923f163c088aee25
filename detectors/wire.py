"""The wire format of a step record: its value fields, and how their values travel (JSON has no
NaN, so a non-finite float travels as a string).

The one definition for every part (the client's sender, the service's ingest, stores and
answers, the CLI, the detectors' batches): a NaN is a value (the loss was NaN), not a missing one,
and must stay visible; ``None`` (null) is "not logged". Standard library only and tiny, so the
client imports it without cost.

>>> encode_float(float("nan")), encode_float(float("-inf")), encode_float(2.5), encode_float(None)
('NaN', '-Infinity', 2.5, None)
>>> decode_float("Infinity"), decode_float(3), decode_float(None)
(inf, 3.0, None)
"""

from __future__ import annotations

import math

# typing costs ~3 ms to import; annotations are strings (PEP 563), so only checkers need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: A record's value fields, besides ``step`` (and ``ts``, ``extra``): what a training loop logs
VALUE_FIELDS = ("loss", "grad_norm", "lr", "val_loss")

#: The wire's spellings of the non-finite values (JSON has no NaN), case-insensitive; the
#: service reads these, and writes "NaN", "Infinity" and "-Infinity" (:func:`encode_float`).
NONFINITE = {
    "nan": math.nan, "+nan": math.nan, "-nan": math.nan,
    "infinity": math.inf, "+infinity": math.inf, "inf": math.inf, "+inf": math.inf,
    "-infinity": -math.inf, "-inf": -math.inf,
}


def decode_float(v: Any) -> float | None:
    """A wire value as a float: a number, null (not logged: None) or one of the non-finite
    spellings (``NONFINITE``). Raises ValueError with the reason for anything else (a boolean,
    another string, a list); an int too large for a float raises OverflowError."""
    t = type(v)
    if t is float:
        return v
    if v is None:
        return None
    if t is int:
        return float(v)
    if t is str:
        f = NONFINITE.get(v.strip().lower())
        if f is None:
            raise ValueError(f"a string value must be 'NaN', 'Infinity' or '-Infinity', got {v[:40]!r}")
        return f
    if isinstance(v, (int, float)) and not isinstance(v, bool):  # numpy scalars, int/float subclasses
        return float(v)
    raise ValueError(f"expected a number, null or 'NaN'/'Infinity'/'-Infinity', got {t.__name__}")


def encode_float(v: float | None) -> float | str | None:
    """A float for the wire: JSON has no NaN, so non-finite values travel as strings."""
    if v is None or math.isfinite(v):  # numpy floats too, without numpy's "invalid value" warning
        return v
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def encode_floats(obj: Any) -> Any:
    """``obj`` with :func:`encode_float` applied to every float at any depth, ready for a JSON
    encoder (orjson would write a NaN as null: it must stay visible). Float subclasses (numpy's
    float64) count as floats; dict keys become strings; tuples become lists."""
    if isinstance(obj, float):
        return encode_float(obj)
    if isinstance(obj, dict):
        return {str(k): encode_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_floats(v) for v in obj]
    return obj
