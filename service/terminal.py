"""Text for a terminal: tables, numbers, times, and a loss sparkline (standard library only)."""

from __future__ import annotations

import math
import time
from typing import Any, Iterable, Sequence

BLOCKS = "▁▂▃▄▅▆▇█"
NOT_FINITE = "×"  # a column holding a NaN or an infinity: the run stopped producing numbers there
NO_DATA = " "
# the API's severities, worst first (losswatch.detectors.types holds them too, but imports numpy)
SEVERITIES_WORST_FIRST = ("critical", "warning", "info")


def num(v: float | None) -> str:
    """A logged value, short: 4 significant digits; NaN, inf and -inf by name; missing as '-'."""
    if v is None:
        return "-"
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


def ago(ts: float | None, now: float | None = None) -> str:
    """Seconds since the epoch -> '12s ago', '3m ago', '5h ago', '2d ago' ('-' when never)."""
    if ts is None:
        return "-"
    s = max(0.0, (time.time() if now is None else now) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return f"{int(s)}s ago"


def action_text(action: dict[str, Any] | None) -> str:
    """An advice dict -> 'scale_lr(factor=0.3)' ('none' when there is nothing to do)."""
    if not action or action.get("type") in (None, "none"):
        return "none"
    params = ", ".join(f"{k}={num(v) if isinstance(v, float) else v}" for k, v in action.items()
                       if k not in ("type", "reason"))
    return f"{action['type']}({params})" if params else str(action["type"])


def worst_first(alerts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts ordered critical, warning, info (stable within a severity)."""
    rank = {s: i for i, s in enumerate(SEVERITIES_WORST_FIRST)}
    return sorted(alerts, key=lambda a: rank.get(a.get("severity"), len(rank)))


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    lines = []
    for r in [list(header), *rows]:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths)] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def sparkline(steps: Sequence[int], values: Sequence[float | None], width: int) -> tuple[str, bool]:
    """``values`` over ``steps`` in ``width`` characters, one column per equal span of steps.

    A column shows the mean of its finite values on a log scale (a loss falls over decades; a
    linear scale flattens everything after the first drop), or on a linear one when a value is
    zero or negative (returned flag: True = log). A column with a NaN or an infinity shows
    :data:`NOT_FINITE` whatever else it holds, so a run that blew up says so where it did; a
    column without values is blank.
    """
    pairs = [(s, v) for s, v in zip(steps, values) if v is not None]
    if not pairs or width < 1:
        return "", True
    first, last = pairs[0][0], pairs[-1][0]
    cols = min(width, max(1, last - first + 1))
    finite = [v for _, v in pairs if math.isfinite(v)]
    log = bool(finite) and min(finite) > 0
    sums = [0.0] * cols
    counts = [0] * cols
    broken = [False] * cols
    for s, v in pairs:
        col = column_of(s, first, last, width)
        if not math.isfinite(v):
            broken[col] = True
        else:
            sums[col] += math.log10(v) if log else v
            counts[col] += 1
    means = [sums[i] / counts[i] if counts[i] else None for i in range(cols)]
    shown = [m for m in means if m is not None]
    lo, hi = (min(shown), max(shown)) if shown else (0.0, 0.0)
    out = []
    for i, m in enumerate(means):
        if broken[i]:
            out.append(NOT_FINITE)
        elif m is None:
            out.append(NO_DATA)
        else:
            level = 0 if hi == lo else round((m - lo) / (hi - lo) * (len(BLOCKS) - 1))
            out.append(BLOCKS[level])
    return "".join(out), log


def column_of(step: int, first: int, last: int, width: int) -> int:
    """The sparkline column (of at most ``width``) that holds ``step`` for a line over steps
    ``first..last``: equal spans of steps, never more columns than steps."""
    span = max(1, last - first + 1)
    width = min(width, span)
    return min(width - 1, max(0, (step - first) * width // span))
