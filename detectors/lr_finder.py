"""Analysis of an LR range test ("LR finder"): from a sweep of (lr, loss) to a suggested LR and
the min/max bounds for cyclic and one-cycle schedules, with the reasoning in words.

The rule (defaults justified in bench/lr_finder_eval.py and bench/results/lr-tooling.md)
---------------------------------------------------------------------------------------
1. Work against log10(lr), never the linear LR: an exponential sweep puts its points evenly in
   log space, and a slope taken against the linear LR (Lightning's rule) is steepest at the first,
   tiny LRs. Points are *binned* on a fixed log grid (``bins_per_decade``) and each bin keeps the
   median loss, so a sweep of 30 or 3,000 steps, linear or exponential, gives the same curve and
   one noisy batch cannot move a bin.
2. Cut the sweep where it exploded: the first non-finite loss, or the first bin after the
   minimum where the smoothed loss climbs back above the starting loss.
3. Smooth the binned curve with a centred Gaussian of ``smooth_decades`` (torch-lr-finder
   smooths with an EMA, which lags: its minimum sits to the right of the real one, and its
   steepest point inherits the noise of single batches).
4. ``min-loss LR`` = argmin of the smoothed curve. The descent is the stretch before it where the
   loss has fallen by more than ``descent_start`` of the total drop.
5. ``suggested_lr`` = ``min-loss LR / max_fraction`` (4): the largest LR that still made fast
   progress over the sweep's short horizon, backed off for a full-length run. The steepest point
   of the descent (most negative slope against log10 lr, the rule of torch-lr-finder and
   Lightning) is reported in the reasoning but not used: on our benchmark it sat ~10x below the
   best constant LR for the AdamW tasks and moved with sweep length (bench/results/lr-tooling.md).
   ``max_lr`` (peak of a one-cycle / cyclic schedule) = ``min-loss LR / 2``, kept below a quarter
   of the LR where the sweep exploded; ``min_lr`` = where the descent starts (>= max_lr / 25,
   one-cycle's default div_factor).

Examples
--------
>>> import math
>>> lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
>>> loss = [2.0 - 1.5 / (1 + math.exp(-3 * (math.log10(x) + 3.5))) + (0 if x < 0.05 else 40 * (x - 0.05))
...         for x in lrs]
>>> s = suggest_lr(lrs, loss)
>>> s.min_lr < s.suggested_lr < s.max_lr < s.min_loss_lr < 0.05
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["Suggestion", "suggest_lr", "read_sweep"]


@dataclass
class Suggestion:
    """What the analysis concluded. ``reason`` explains it in a few sentences; ``notes`` lists the
    caveats (sweep too short, range too narrow...)."""

    suggested_lr: float
    min_lr: float
    max_lr: float
    reason: str
    min_loss_lr: float | None = None
    steepest_lr: float | None = None
    exploded_at_lr: float | None = None
    points_used: int = 0
    confidence: str = "high"  # high | low
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gauss_smooth(y: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Centred Gaussian smoothing that renormalises at the edges (no edge shrinkage)."""
    if sigma_bins <= 0 or len(y) < 3:
        return y.copy()
    half = int(math.ceil(3 * sigma_bins))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_bins) ** 2)
    num = np.convolve(y, k, mode="same") if len(y) >= len(k) else np.array(
        [np.sum(y[max(0, i - half):i + half + 1] * k[max(0, half - i):half + len(y) - i]) for i in range(len(y))])
    den = np.convolve(np.ones_like(y), k, mode="same") if len(y) >= len(k) else np.array(
        [np.sum(k[max(0, half - i):half + len(y) - i]) for i in range(len(y))])
    return num / den


def suggest_lr(
    lrs: Sequence[float],
    losses: Sequence[float],
    *,
    bins_per_decade: int = 20,
    smooth_decades: float = 0.15,
    descent_start: float = 0.1,
    max_fraction: float = 4.0,
) -> Suggestion:
    """Suggest an LR from a range-test sweep.

    Parameters
    ----------
    lrs, losses
        The sweep, one pair per step, in the order it was run. Non-finite losses mark the point
        where the sweep exploded; anything after it is ignored.
    bins_per_decade
        Resolution of the log-LR grid the sweep is binned onto (median loss per bin).
    smooth_decades
        Standard deviation of the Gaussian smoothing, in decades of LR.
    descent_start
        Fraction of the total drop after which the loss counts as falling (``min_lr``).
    max_fraction
        The suggestion is ``min-loss LR / max_fraction``.

    Raises
    ------
    ValueError
        When the sweep is unusable: fewer than 5 finite points, non-positive LRs, or an LR range
        narrower than a quarter of a decade.
    """
    lr = np.asarray(lrs, dtype=float)
    loss = np.asarray(losses, dtype=float)
    if lr.shape != loss.shape or lr.ndim != 1:
        raise ValueError("lr and loss must be two sequences of the same length")
    notes: list[str] = []
    if not np.all(np.isfinite(lr)) or np.any(lr <= 0):
        raise ValueError("every lr must be a finite positive number")
    exploded_at = None
    bad = np.flatnonzero(~np.isfinite(loss))
    if bad.size:
        exploded_at = float(lr[bad[0]])
        lr, loss = lr[: bad[0]], loss[: bad[0]]
    if lr.size < 5:
        raise ValueError(f"a sweep needs at least 5 finite points before it explodes, got {lr.size}")
    if np.any(np.diff(lr) < 0):
        notes.append("the LRs were not increasing; points were sorted by LR")
        order = np.argsort(lr, kind="stable")
        lr, loss = lr[order], loss[order]
    x = np.log10(lr)
    span = float(x[-1] - x[0])
    if span < 0.25:
        raise ValueError(f"the sweep covers only {10 ** span:.2f}x in LR; sweep at least 2x (ideally 1e-7..10)")

    # 1. bin on a log grid, median per bin (robust to single noisy batches, to sweep length
    #    and to linear vs exponential spacing)
    nb = max(5, int(round(span * bins_per_decade)))
    edges = np.linspace(x[0], x[-1] + 1e-12, nb + 1)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, nb - 1)
    counts = np.bincount(idx, minlength=nb)
    keep = counts > 0
    bx = np.array([np.median(x[idx == i]) for i in range(nb) if keep[i]])
    by = np.array([np.median(loss[idx == i]) for i in range(nb) if keep[i]])
    if lr.size < 20:
        notes.append(f"only {lr.size} points: the suggestion is rough; sweep 100+ steps")
    # 3. smooth (sigma in bins of the real spacing)
    step = float(np.median(np.diff(bx))) if bx.size > 1 else 1.0
    sm = _gauss_smooth(by, smooth_decades / max(step, 1e-12))

    # 2. explosion: after the minimum, the smoothed loss climbs above the starting loss
    start_loss = float(sm[0])
    i_min = int(np.argmin(sm))
    above = np.flatnonzero(sm[i_min:] > start_loss) + i_min
    cut = len(sm)
    if above.size:
        cut = int(above[0])
        if exploded_at is None:
            exploded_at = float(10 ** bx[cut])
    bx, sm, by = bx[:cut], sm[:cut], by[:cut]
    i_min = int(np.argmin(sm))
    min_loss_lr = float(10 ** bx[i_min])
    drop = start_loss - float(sm[i_min])
    rel_drop = drop / (abs(start_loss) + 1e-12)

    if drop <= 0 or rel_drop < 0.01 or i_min == 0:
        # the loss never fell: the range started too high (or the model does not learn)
        lo = float(10 ** bx[0])
        return Suggestion(
            suggested_lr=lo / 10, min_lr=lo / 100, max_lr=lo, min_loss_lr=min_loss_lr, exploded_at_lr=exploded_at,
            points_used=int(lr.size), confidence="low", notes=notes + ["the loss never fell"],
            reason=(f"The loss did not fall anywhere in the sweep ({10 ** x[0]:.3g}..{10 ** x[-1]:.3g}); even the "
                    f"smallest LR may already be too high. Suggesting {lo / 10:.3g} (10x below the start); "
                    f"repeat the sweep from a lower LR."),
        )

    # 4. descent: where the loss has fallen by descent_start of the drop
    fallen = (start_loss - sm[: i_min + 1]) >= descent_start * drop
    i_start = int(np.argmax(fallen))
    # 5. steepest point of the descent against log10(lr)
    grad = np.gradient(sm, bx) if sm.size > 1 else np.zeros_like(sm)
    lo_i = max(0, i_start - 1)
    i_steep = lo_i + int(np.argmin(grad[lo_i: i_min + 1]))
    steepest_lr = float(10 ** bx[i_steep])
    suggested = min_loss_lr / max_fraction
    max_lr = min_loss_lr / 2
    if exploded_at is not None:
        max_lr = min(max_lr, exploded_at / 4)
    max_lr = max(max_lr, suggested)
    min_lr = max(float(10 ** bx[i_start]), max_lr / 25)
    min_lr = min(min_lr, suggested)

    confidence = "high"
    if i_min == len(sm) - 1 and exploded_at is None:
        confidence = "low"
        notes.append("the loss was still falling at the largest LR tried: sweep higher; the bounds are lower bounds")
    if span < 2:
        notes.append(f"the sweep covers {span:.1f} decades; 4+ decades make the picture clearer")
        confidence = "low" if span < 1 else confidence
    if rel_drop < 0.05:
        notes.append(f"the loss fell only {100 * rel_drop:.1f}% over the sweep: little signal")
        confidence = "low"

    why = (f"Suggested: a {max_fraction:g}th of the min-loss LR ({suggested:.3g}); the loss fell fastest at "
           f"{steepest_lr:.3g} (slope {grad[i_steep]:.3g} per decade), a rule that proved too timid on the benchmark.")
    reason = (
        f"Loss fell from {start_loss:.4g} to {sm[i_min]:.4g} ({100 * rel_drop:.0f}%), lowest at lr {min_loss_lr:.3g}"
        + (f"; the sweep exploded at {exploded_at:.3g}" if exploded_at is not None else "")
        + f". It starts falling at {10 ** bx[i_start]:.3g}. {why} "
        f"For one-cycle/cyclic: max_lr {max_lr:.3g} (half the min-loss LR"
        + (", under a quarter of the explosion" if exploded_at is not None else "")
        + f"), min_lr {min_lr:.3g} (where the descent starts, at least max_lr/25)."
    )
    if notes:
        reason += " Caveats: " + "; ".join(notes) + "."
    return Suggestion(
        suggested_lr=float(suggested), min_lr=float(min_lr), max_lr=float(max_lr), reason=reason,
        min_loss_lr=min_loss_lr, steepest_lr=steepest_lr, exploded_at_lr=exploded_at,
        points_used=int(lr.size), confidence=confidence, notes=notes,
    )


def read_sweep(path: str) -> tuple[list[float], list[float]]:
    """Read a recorded sweep: CSV with a header naming ``lr`` and ``loss`` columns, or JSON lines
    with those keys (``learning_rate`` is accepted for ``lr``). Non-finite losses ("nan", "inf",
    "NaN", "Infinity") are kept: they mark the explosion. Raises ValueError naming the line."""
    import csv
    import json

    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    head = text.lstrip()[:1]
    lrs: list[float] = []
    losses: list[float] = []

    def num(v: Any, what: str, where: str) -> float:
        if isinstance(v, bool) or v is None:
            raise ValueError(f"{where}: {what} is {v!r}, not a number")
        try:
            return float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {what} is {v!r}, not a number") from None

    if head in ("{", "["):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: expected an object with lr and loss")
            lr_v = obj.get("lr", obj.get("learning_rate"))
            if lr_v is None or "loss" not in obj:
                raise ValueError(f"{path}:{n}: needs keys 'lr' and 'loss'")
            lrs.append(num(lr_v, "lr", f"{path}:{n}"))
            losses.append(num(obj["loss"], "loss", f"{path}:{n}"))
    else:
        rows = csv.reader(text.splitlines())
        header = [h.strip().lower() for h in next(rows, [])]
        lr_col = "lr" if "lr" in header else "learning_rate" if "learning_rate" in header else None
        if lr_col is None or "loss" not in header:
            raise ValueError(f"{path}: the CSV header must name columns 'lr' and 'loss' (got {header})")
        il, io = header.index(lr_col), header.index("loss")
        for n, row in enumerate(rows, 2):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) <= max(il, io):
                raise ValueError(f"{path}:{n}: too few columns")
            lrs.append(num(row[il].strip(), "lr", f"{path}:{n}"))
            losses.append(num(row[io].strip(), "loss", f"{path}:{n}"))
    if not lrs:
        raise ValueError(f"{path}: no sweep points")
    return lrs, losses
