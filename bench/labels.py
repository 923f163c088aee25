"""Objective labels for the benchmark runs, computed from the logged data and the LR siblings.

Usage::

    .venv/bin/python bench/labels.py          # (re)writes bench/runs/labels.json from the CSVs

Nothing here looks at what a scenario *intended*: a run planned as "LR x100" whose loss happens to
converge gets no LR label, a healthy-looking cyclic run whose /10 sibling ends clearly lower is
"LR too high". The rules (each a small function below, tested on synthetic curves in
tests/test_benchmark.py):

nan
    the loss is non-finite at some step; the deadline is the first such step.
divergence (the run is lost)
    with L~ the loss smoothed by a centred running median over 5 % of the run (>= 9 steps;
    non-finite = +inf), m(t) the running minimum of L~, L0 = L~(0) and sigma the robust noise
    scale of loss - L~: the lost step D is the first t after which L~ never again comes below
    m(t) + max(0.5 (L0 - m(t)), 0.25 m(t), 4 sigma) (half the progress made, or 25 % over the
    best when nothing was learned, and never within the minibatch noise), or never again below
    1.5x the loss at the start (max of the first loss and the median of the first 5: a run
    clearly worse than its untrained model is lost however noisy it is), with at least 20 steps
    left or a non-finite tail.
    "divergence" holds when D comes before the first non-finite loss (the finite loss climbed
    first); a run that jumps straight to NaN is "nan" only. The deadline is D.
lr_too_high / lr_too_low (runs of an LR ladder: same config and seed, LR x10 apart)
    F = mean training loss over the last 10 % of the run (+inf for a lost run), L0 the median of
    the first 5 losses (the lowest such value on the ladder: the rungs share their start). Sibling b ends clearly lower than run a when F_b < F_a, F_a - F_b >=
    0.02 L0 (an absolute floor), and either F_b <= F_a / 2, or the gap is >= 3 standard errors
    of the difference (from the robust step noise of both runs) and either
    F_a - F_b >= 0.1 (L0 - F_b) (a tenth of the achievable progress) or F_b <= F_a / 1.5.
    "LR too high": the nearest lower-LR rung that is not itself lost, and learned something (ends
    below 0.95 L0: a rung dead at chance is skipped like a lost one), ends clearly lower.
    "LR too low": the LR x10 sibling is not lost and ends clearly lower. Both: the larger gap wins.
spike_transient
    a step t >= 20 whose loss is >= 2x the median of the previous 20 losses and above it by
    >= 0.2 max(L0 - median, median), before the run is lost, and after which the smoothed loss is
    back within median + max(0.1 max(L0 - median, median), 2 sigma) inside 100 steps.
lr_schedule_bug (from the logged LR alone)
    the LR rises >= 3x from one step to the next (no healthy policy here does: warm-ups at most
    double it per step, cyclic and one-cycle change it smoothly), or it falls to <= 1 % of its
    maximum before 60 % of the run and never comes back (a decay to zero far too early).
overfitting (runs with a validation loss, not lost)
    the validation loss first fell (its best <= 0.8x its first value), then the mean of the last
    3 validation losses is >= 1.25x that best (and above it by >= 0.02 L0) while the training
    loss ended below its value at the best point.
healthy
    none of nan, divergence, lr_too_high, lr_too_low, lr_schedule_bug, overfitting (a transient
    spike is allowed: "healthy" and "spike_transient" can both hold).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RUNS_DIR = HERE / "runs"
LABELS_PATH = RUNS_DIR / "labels.json"

SMOOTH_WINDOW = 9
LOST_MIN_TAIL = 20
LOST_NOISE = 4.0
LOST_ABOVE_START = 1.5
FINAL_FRACTION = 0.1
LEARNED_SOMETHING = 0.95  # a rung that ends above this x L0 learned nothing (dead at chance)
CLEAR_FLOOR = 0.02
CLEAR_PROGRESS = 0.1
CLEAR_RATIO = 1.5
CLEAR_SE = 3.0
CLEAR_HALF = 2.0
SPIKE_WINDOW = 20
SPIKE_RATIO = 2.0
SPIKE_RISE = 0.2
SPIKE_RECOVER = 0.1
SPIKE_RECOVER_STEPS = 100
SPIKE_RECOVER_NOISE = 2.0
LR_JUMP_RATIO = 3.0
OVERFIT_RATIO = 1.25
OVERFIT_TAIL_POINTS = 3
OVERFIT_LEARNED = 0.8
LR_ZERO_FRACTION = 0.01
LR_ZERO_BEFORE = 0.6

#: which alert kinds detect a condition (severity >= warning; "spike" any severity)
DETECTED_BY = {
    "nan": ("nan",),
    "divergence": ("divergence", "grad_explosion", "nan"),
    "lr_too_high": ("divergence", "oscillation", "nan", "grad_explosion"),
    "lr_too_low": ("plateau",),
    "spike_transient": ("spike",),
    "lr_schedule_bug": ("lr_anomaly",),
    "overfitting": ("overfitting",),
}
#: alert kinds that a true condition explains (not a false positive of another condition)
EXPLAINS = {
    "nan": ("nan",),
    "divergence": ("divergence", "grad_explosion", "nan", "oscillation", "spike"),
    "lr_too_high": ("divergence", "oscillation", "nan", "grad_explosion", "spike"),
    "lr_too_low": ("plateau", "grad_vanishing"),
    "spike_transient": ("spike",),
    "lr_schedule_bug": ("lr_anomaly", "plateau", "divergence", "oscillation", "grad_explosion", "spike", "nan"),
    "overfitting": ("overfitting",),
}
PROBLEMS = ("nan", "divergence", "lr_too_high", "lr_too_low", "lr_schedule_bug", "overfitting")


# --------------------------------------------------------------------------- reading
def read_run(path: str | Path) -> dict[str, list]:
    """A run CSV as columns; an empty cell is None (not logged), "nan" is a NaN value.

    Parsed by losswatch's own CSV reader (the one ``losswatch replay`` uses), so the benchmark
    reads a file exactly as a user's replay would."""
    from losswatch.service.readers import read_run as read_records

    cols: dict[str, list] = {"step": [], "loss": [], "grad_norm": [], "lr": [], "val_loss": []}
    for r in read_records(path, "csv"):
        cols["step"].append(r.step)
        for k in ("loss", "grad_norm", "lr", "val_loss"):
            cols[k].append(getattr(r, k))
    return cols


def _arr(xs) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in xs], dtype=float)


# --------------------------------------------------------------------------- rules
def first_nonfinite(loss) -> int | None:
    """Index of the first non-finite loss, or None."""
    a = _arr(loss)
    bad = np.flatnonzero(~np.isfinite(a))
    return int(bad[0]) if bad.size else None


def smooth(loss, window: int | None = None) -> np.ndarray:
    """Centred running median; non-finite counts as +inf; windows shrink at the edges.

    The default window is 5 % of the run (at least 9 steps, odd), so minibatch noise does not
    make a lucky low the "best" the rest of the run is measured against."""
    a = _arr(loss)
    a = np.where(np.isfinite(a), a, np.inf)
    n = len(a)
    if window is None:
        window = max(SMOOTH_WINDOW, (n // 20) | 1)
    h = window // 2
    if n == 0:
        return a
    # pad with NaN and take nanmedian: the window shrinks at the edges instead of repeating them
    p = np.concatenate([np.full(h, np.nan), a, np.full(h, np.nan)])
    return np.nanmedian(np.lib.stride_tricks.sliding_window_view(p, 2 * h + 1), axis=1)


def noise_level(loss) -> float:
    """Robust scale of the step-to-step noise: 1.4826 x median |loss - smoothed| (finite part)."""
    a = _arr(loss)
    s = smooth(loss)
    ok = np.isfinite(a) & np.isfinite(s)
    return float(1.4826 * np.median(np.abs(a[ok] - s[ok]))) if ok.any() else 0.0


def lost_step(loss) -> int | None:
    """The step index after which the run never comes back (see the module docstring), or None."""
    s = smooth(loss)
    n = len(s)
    if n == 0:
        return None
    l0 = s[0]
    best = np.minimum.accumulate(s)
    margin = np.maximum(np.maximum(0.5 * (l0 - best), 0.25 * np.abs(best)), LOST_NOISE * noise_level(loss))
    start = _arr(loss)[0]
    start = max(start, initial_loss(loss)) if np.isfinite(start) else initial_loss(loss)
    if np.isfinite(start) and start > 0:
        # clearly worse than the untrained model is lost, however noisy the run
        thr = np.minimum(best + margin, LOST_ABOVE_START * start)
    else:
        thr = best + margin
    suffix_min = np.minimum.accumulate(s[::-1])[::-1]
    raw = _arr(loss)
    nonfinite_tail = np.flipud(np.logical_and.accumulate(np.flipud(~np.isfinite(raw) | ~np.isfinite(s))))
    for t in range(n):
        if suffix_min[t] > thr[t]:
            if not (n - t >= LOST_MIN_TAIL or nonfinite_tail[t] or not np.isfinite(raw[-1])):
                return None
            # the centred window can cross before the raw loss does: the run is lost at the
            # first step from there whose own loss is past the threshold
            bad = ~np.isfinite(raw[t:]) | (raw[t:] > thr[t])
            return t + int(np.argmax(bad)) if bad.any() else t
    return None


def final_loss(loss) -> float:
    """Mean training loss over the last 10 % of the run; +inf for a lost or non-finite run."""
    a = _arr(loss)
    if lost_step(loss) is not None:
        return math.inf
    k = max(1, int(round(len(a) * FINAL_FRACTION)))
    tail = a[-k:]
    if not np.all(np.isfinite(tail)):
        return math.inf
    return float(tail.mean())


def final_noise(loss) -> float:
    """Standard error of :func:`final_loss` from the run's robust step noise (0 when lost)."""
    a = _arr(loss)
    k = max(1, int(round(len(a) * FINAL_FRACTION)))
    if lost_step(loss) is not None:
        return 0.0
    return noise_level(loss) / math.sqrt(k)


def initial_loss(loss) -> float:
    """The loss level at the start: median of the first 5 finite losses."""
    a = _arr(loss)[:5]
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else math.nan


def clearly_lower(f_b: float, f_a: float, l0: float, se: float = 0.0) -> bool:
    """Does a sibling with final loss ``f_b`` end clearly lower than a run with ``f_a``?

    ``se`` is the standard error of the difference; the gap must be >= 3 se."""
    if not math.isfinite(f_b) or not f_b < f_a:
        return False
    if math.isinf(f_a):
        return True
    gap = f_a - f_b
    if gap < CLEAR_FLOOR * abs(l0):
        return False
    if f_b <= f_a / CLEAR_HALF:
        return True  # half the loss: clear whatever the noise (each F averages >= 40 steps)
    if gap < CLEAR_SE * se:
        return False
    return gap >= CLEAR_PROGRESS * (l0 - f_b) or f_b <= f_a / CLEAR_RATIO


def spike_steps(loss, until: int | None = None) -> list[int]:
    """Indices of transient spikes (see the module docstring) before ``until``."""
    a = _arr(loss)
    s = smooth(loss)
    n = len(a) if until is None else min(len(a), until)
    fin = a[np.isfinite(a)]
    if fin.size == 0:
        return []
    l0 = initial_loss(loss)
    sigma = noise_level(loss)
    out = []
    for t in range(SPIKE_WINDOW, n):
        if not np.isfinite(a[t]):
            continue
        prev = a[t - SPIKE_WINDOW : t]
        prev = prev[np.isfinite(prev)]
        if prev.size < SPIKE_WINDOW // 2:
            continue
        med = float(np.median(prev))
        scale = max(l0 - med, abs(med))
        if a[t] >= SPIKE_RATIO * med and a[t] - med >= SPIKE_RISE * scale:
            back = s[t + 1 : min(n, t + 1 + SPIKE_RECOVER_STEPS)]
            if back.size and np.any(back <= med + max(SPIKE_RECOVER * scale, SPIKE_RECOVER_NOISE * sigma)):
                if not out or t - out[-1] > 5:  # one spike, not its neighbours
                    out.append(t)
    return out


def overfitting_onset(steps, val_loss, loss) -> dict | None:
    """{"onset_step", "best_val", "final_val"} when the validation loss ends clearly above its
    minimum while the training loss kept falling (see the module docstring), else None."""
    pts = [(st, v) for st, v in zip(steps, val_loss) if v is not None]
    if len(pts) < 6 or lost_step(loss) is not None:
        return None
    vs = np.array([v for _, v in pts], dtype=float)
    if not np.all(np.isfinite(vs)):
        return None
    k = OVERFIT_TAIL_POINTS
    i_best = int(np.argmin(vs[:-k]))
    best, tail = float(vs[i_best]), float(vs[-k:].mean())
    l0 = float(vs[0])
    if i_best == 0 or best > OVERFIT_LEARNED * l0:
        return None  # the validation loss never really fell: a broken run, not an overfitting one
    if not (tail >= OVERFIT_RATIO * best and tail - best >= CLEAR_FLOOR * abs(l0)):
        return None
    sm = smooth(loss)
    idx = {st: i for i, st in enumerate(steps)}
    if not final_loss(loss) < sm[idx[pts[i_best][0]]]:
        return None  # the training loss did not keep improving: not overfitting
    return {"onset_step": pts[i_best][0], "best_val": best, "final_val": tail}


def schedule_bug(lr) -> dict | None:
    """{"kind": "jump"|"early_zero", "onset": index, ...} when the logged LR shows a schedule bug."""
    a = _arr(lr)
    n = len(a)
    for t in range(1, n):
        if a[t - 1] > 0 and np.isfinite(a[t]) and a[t] / a[t - 1] >= LR_JUMP_RATIO:
            return {"kind": "jump", "onset": t, "ratio": float(a[t] / a[t - 1]), "direction": "down"}
    top = np.nanmax(a) if n else 0.0
    if top > 0:
        low = a <= LR_ZERO_FRACTION * top
        stays = np.flipud(np.logical_and.accumulate(np.flipud(low)))
        idx = np.flatnonzero(stays)
        if idx.size and idx[0] < LR_ZERO_BEFORE * n and n - idx[0] >= LOST_MIN_TAIL:
            return {"kind": "early_zero", "onset": int(idx[0]), "fraction_of_run": round(idx[0] / n, 3), "direction": "up"}
    return None


# --------------------------------------------------------------------------- labelling
def lr_labels(run_id: str, cfg: dict, finals: dict[str, float], l0: float, noise: dict[str, float] | None = None) -> dict:
    """lr_too_high / lr_too_low from the ladder: returns {"condition": ..., "rule": ..., numbers}."""
    ladder = cfg.get("ladder") or []
    if run_id not in ladder:
        return {}
    i = ladder.index(run_id)
    f = finals[run_id]
    noise = noise or {}

    def se(other: str) -> float:
        return math.hypot(noise.get(run_id, 0.0), noise.get(other, 0.0))

    high = None
    for j in range(i - 1, -1, -1):  # nearest lower rung that is not itself lost and learned something
        if math.isfinite(finals[ladder[j]]) and finals[ladder[j]] < LEARNED_SOMETHING * l0:
            if clearly_lower(finals[ladder[j]], f, l0, se(ladder[j])):
                high = (ladder[j], finals[ladder[j]])
            break
    low = None
    if i + 1 < len(ladder) and clearly_lower(finals[ladder[i + 1]], f, l0, se(ladder[i + 1])):
        low = (ladder[i + 1], finals[ladder[i + 1]])
    out = {"final_loss": f, "l0": l0, "siblings_final": {k: finals[k] for k in ladder}}
    if high and low:
        if (f - high[1]) >= (f - low[1]):
            low = None
        else:
            high = None
    if high:
        out.update(condition="lr_too_high", rule=f"lower-LR rung {high[0]} ends clearly lower ({_fmt(high[1])} vs {_fmt(f)})")
    elif low:
        out.update(condition="lr_too_low", rule=f"LR x10 sibling {low[0]} ends clearly lower ({_fmt(low[1])} vs {_fmt(f)})")
    return out


def _fmt(v: float) -> str:
    return "inf (lost)" if math.isinf(v) else f"{v:.4g}"


def label_runs(configs: list[dict], runs_dir: Path = RUNS_DIR) -> dict:
    """Labels for every planned run that has a CSV; keyed by run id."""
    data = {}
    for cfg in configs:
        p = runs_dir / f"{cfg['run_id']}.csv"
        if p.exists():
            data[cfg["run_id"]] = read_run(p)
    finals = {rid: final_loss(d["loss"]) for rid, d in data.items()}
    noise = {rid: final_noise(d["loss"]) for rid, d in data.items()}
    out = {}
    for cfg in configs:
        rid = cfg["run_id"]
        if rid not in data:
            continue
        if any(s not in data for s in cfg.get("ladder") or []):
            continue  # a ladder is labelled once all of its rungs exist
        d = data[rid]
        steps = d["step"]
        loss = d["loss"]
        cond: list[str] = []
        ev: dict = {}
        nan_i = first_nonfinite(loss)
        lost_i = lost_step(loss)
        deadline = None
        if nan_i is not None:
            cond.append("nan")
            ev["nan"] = {"rule": "first non-finite loss", "step": steps[nan_i]}
            deadline = steps[nan_i] if lost_i is not None else None
        if lost_i is not None and (nan_i is None or lost_i < nan_i):
            cond.append("divergence")
            deadline = steps[lost_i]
            sm = smooth(loss)
            best = float(np.min(sm[: lost_i + 1]))
            ev["divergence"] = {
                "rule": "smoothed loss never again below best + max(0.5 (L0 - best), 0.25 best) after this step",
                "step": steps[lost_i], "best": best, "l0": float(sm[0]),
            }
        # the start is common to the ladder (same weights, same first batch); a rung whose loss
        # exploded within its first 5 steps must not inflate it
        l0 = min([initial_loss(data[r]["loss"]) for r in cfg.get("ladder") or []] or [initial_loss(loss)])
        lrl = lr_labels(rid, cfg, finals, l0, noise)
        if lrl.get("condition"):
            cond.append(lrl["condition"])
            ev[lrl["condition"]] = {k: v for k, v in lrl.items() if k != "condition"}
        bug = schedule_bug(d["lr"])
        if bug:
            cond.append("lr_schedule_bug")
            bug["onset_step"] = steps[bug.pop("onset")]
            ev["lr_schedule_bug"] = {"rule": f"logged LR: {bug['kind']}", **bug}
        of = overfitting_onset(steps, d["val_loss"], loss)
        if of:
            cond.append("overfitting")
            ev["overfitting"] = {"rule": "mean of the last 3 val losses >= 1.25x the best earlier one, "
                                         "training loss still below its value then", **of}
        spikes = spike_steps(loss, until=lost_i)
        if spikes and lost_i is None:
            cond.append("spike_transient")
            ev["spike_transient"] = {"rule": "loss >= 2x its 20-step median, recovered within 100 steps",
                                     "steps": [steps[t] for t in spikes]}
        if not any(c in PROBLEMS for c in cond):
            cond.insert(0, "healthy")
        if "lr_too_high" in cond:
            direction = "down"
        elif "lr_too_low" in cond:
            direction = "up"
        elif bug:
            direction = bug["direction"]
        elif "healthy" in cond:
            direction = "none"
        else:
            direction = None  # a data problem (NaN batch): no LR direction is scored
        kinds = sorted({k for c in cond for k in DETECTED_BY.get(c, ())})
        out[rid] = {
            **{k: cfg[k] for k in ("family", "optimizer", "scenario", "policy", "base_lr", "lr_mult", "lr", "seed",
                                   "declared_schedule", "siblings", "injection")},
            "n_steps": len(steps),
            "conditions": cond,
            "deadline_step": deadline,
            "nan_step": steps[nan_i] if nan_i is not None else None,
            "lost_step": steps[lost_i] if lost_i is not None else None,
            "expected_kinds": kinds,
            "expected_direction": direction,
            "evidence": _json_safe(ev),
        }
    return out


def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else ("inf" if x > 0 else "-inf") if not math.isnan(x) else "nan"
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def main(argv=None) -> int:
    sys.path.insert(0, str(HERE))
    from gen_runs import plan

    labels = label_runs(plan())
    doc = {
        "about": "Objective labels of the losswatch detection benchmark; rules in bench/labels.py.",
        "detected_by": DETECTED_BY,
        "runs": labels,
    }
    LABELS_PATH.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    counts: dict[str, int] = {}
    for r in labels.values():
        for c in r["conditions"]:
            counts[c] = counts.get(c, 0) + 1
    print(f"{len(labels)} runs labelled -> {LABELS_PATH}")
    for c, n in sorted(counts.items()):
        print(f"  {c:16s} {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
