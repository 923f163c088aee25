"""LR policy evaluator: compare recorded runs that differ by their LR policy.

Three questions, after LRBench:

* **single-policy selection** - which policy reaches the best metric within a budget of B steps?
  (best smoothed value up to B; the final smoothed value at B is reported too)
* **cost-effective tuning** - which policy reaches a target loss in the fewest steps?
* **multi-policy composition** - training split into stages (step boundaries): which policy leads
  at the end of each stage, and what composite schedule (that leader's LR over each stage)
  follows. Composition is estimated from runs that each started from step 0: it proposes a
  schedule to try, not a measured one (say so in every report).

A run's loss is smoothed by a centred running median (``smooth`` steps, default max(11, 3% of
the run)): offline, so centring costs nothing and a single noisy batch cannot win a ranking.
A run is *diverged* from its first non-finite loss, or from the first step where its smoothed
loss climbs above 3x its best and above its starting value; a diverged run ranks after every
healthy one from that step on.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from losswatch.detectors.schedules import build_schedule


@dataclass
class EvalRun:
    """One recorded run of one policy."""

    name: str
    steps: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    policy: dict[str, Any] | None = None
    wall_time_s: float | None = None
    smoothed: np.ndarray = field(default_factory=lambda: np.zeros(0))
    diverged_at: int | None = None

    def prepare(self, smooth: int | None = None) -> None:
        order = np.argsort(self.steps, kind="stable")
        self.steps, self.loss, self.lr = self.steps[order], self.loss[order], self.lr[order]
        n = len(self.loss)
        w = smooth or max(11, n // 30)
        w = max(1, min(w, n)) | 1
        finite = np.isfinite(self.loss)
        bad = np.flatnonzero(~finite)
        first_bad = int(bad[0]) if bad.size else n
        sm = np.full(n, np.nan)
        good = self.loss[:first_bad]
        if good.size:
            pad = np.pad(good, (w // 2, w // 2), mode="edge")
            win = np.lib.stride_tricks.sliding_window_view(pad, w)
            sm[:first_bad] = np.median(win, axis=1)
        self.smoothed = sm
        self.diverged_at = int(self.steps[first_bad]) if first_bad < n else None
        if first_bad > 0:
            best = np.minimum.accumulate(sm[:first_bad])
            blow = np.flatnonzero((sm[:first_bad] > 3 * best) & (sm[:first_bad] > sm[0]) & (best > 0))
            if blow.size:
                self.diverged_at = int(self.steps[blow[0]])

    def wall_fraction(self, step: int) -> float | None:
        """Share of the run's steps done at ``step`` (to scale its wall time); None when the run
        has no wall time or a single step."""
        if self.wall_time_s is None or not self.steps[-1] > self.steps[0]:
            return None
        return (step - self.steps[0]) / (self.steps[-1] - self.steps[0])

    def healthy_until(self, step: int) -> bool:
        return self.diverged_at is None or self.diverged_at > step

    def value_at(self, step: int) -> float:
        """Smoothed loss at the last recorded step <= step (NaN if none or diverged)."""
        i = int(np.searchsorted(self.steps, step, side="right")) - 1
        if i < 0 or not self.healthy_until(int(self.steps[i])):
            return math.nan
        return float(self.smoothed[i])

    def best_until(self, step: int) -> float:
        i = int(np.searchsorted(self.steps, step, side="right"))
        vals = self.smoothed[:i]
        vals = vals[np.isfinite(vals)]
        if not self.healthy_until(step) or vals.size == 0:
            return math.nan
        return float(vals.min())


def load_manifest(path: str, metric: str = "loss") -> list[EvalRun]:
    """Read a manifest: JSON lines (or one JSON list) of ``{"path": run file, "policy": LR
    schedule, "name": ..., "wall_time_s": ...}``; run files are anything ``losswatch replay``
    reads (CSV, JSON lines, trainer_state.json, TensorBoard). Paths are relative to the manifest.
    A run without an LR column gets its LR from its policy. Raises ValueError naming the entry."""
    from losswatch.service.readers import ReadError, read_run

    base = Path(path).parent
    text = Path(path).read_text(encoding="utf-8")
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON lines / a JSON list ({e.msg} at line {e.lineno})") from None
    runs: list[EvalRun] = []
    for k, it in enumerate(items, 1):
        where = f"{path} entry {k}"
        if not isinstance(it, dict) or not isinstance(it.get("path"), str):
            raise ValueError(f"{where}: needs a 'path' to a run file")
        policy = it.get("policy")
        sched = None
        if policy is not None:
            try:
                sched = build_schedule(policy)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        p = Path(it["path"])
        p = p if p.is_absolute() else base / p
        try:
            recs = list(read_run(str(p)))
        except (ReadError, OSError) as e:
            raise ValueError(f"{where}: {e}") from None
        if metric == "val_loss":
            recs = [r for r in recs if r.val_loss is not None]
        if len(recs) < 2:
            raise ValueError(f"{where}: {p.name} has fewer than 2 steps with a {metric}")
        steps = np.array([r.step for r in recs], dtype=np.int64)
        vals = np.array([getattr(r, metric) if getattr(r, metric) is not None else np.nan for r in recs], dtype=float)
        lr = np.array([r.lr if r.lr is not None else (sched.lr_at(r.step) if sched else np.nan) for r in recs], dtype=float)
        name = str(it.get("name") or p.stem)
        wt = it.get("wall_time_s")
        runs.append(EvalRun(name=name, steps=steps, loss=vals, lr=lr, policy=sched.to_spec() if sched else None,
                            wall_time_s=float(wt) if isinstance(wt, (int, float)) and not isinstance(wt, bool) else None))
    if not runs:
        raise ValueError(f"{path}: no runs listed")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: run names must be unique, got {names}")
    return runs


def select_policy(runs: Sequence[EvalRun], budget: int) -> dict[str, Any]:
    """Single-policy selection: the best smoothed metric reached within the first ``budget``
    steps (steps 0 .. budget-1)."""
    last = budget - 1
    rows = []
    for r in runs:
        rows.append({"name": r.name, "policy": r.policy, "best": _nan_none(r.best_until(last)),
                     "final": _nan_none(r.value_at(last)),
                     "diverged_at": r.diverged_at if not r.healthy_until(last) else None})
    ranked = sorted(rows, key=lambda d: (d["best"] is None, d["best"] if d["best"] is not None else 0.0))
    return {"budget": budget, "winner": ranked[0]["name"] if ranked and ranked[0]["best"] is not None else None,
            "ranking": ranked}


def cost_to_target(runs: Sequence[EvalRun], target: float) -> dict[str, Any]:
    """Cost-effective tuning: fewest steps for the smoothed loss to reach ``target``."""
    rows = []
    for r in runs:
        ok = np.flatnonzero(np.isfinite(r.smoothed) & (r.smoothed <= target))
        step = int(r.steps[ok[0]]) if ok.size else None
        if step is not None and not r.healthy_until(step):
            step = None
        frac = None if step is None else r.wall_fraction(step)
        wall = None if frac is None else r.wall_time_s * frac
        rows.append({"name": r.name, "policy": r.policy, "steps_to_target": step, "est_wall_time_s": wall})
    ranked = sorted(rows, key=lambda d: (d["steps_to_target"] is None, d["steps_to_target"] or 0))
    return {"target": target, "winner": ranked[0]["name"] if ranked and ranked[0]["steps_to_target"] is not None else None,
            "ranking": ranked}


def compose(runs: Sequence[EvalRun], boundaries: Sequence[int]) -> dict[str, Any]:
    """Multi-policy composition: per stage [b_i, b_i+1), the policy that leads (lowest smoothed
    loss) at the stage's end, and the composite LR schedule that follows those leaders."""
    b = sorted(set(int(x) for x in boundaries))
    if len(b) < 2:
        raise ValueError("composition needs at least two stage boundaries, e.g. 0,1000,3000")
    stages = []
    for lo, hi in zip(b[:-1], b[1:]):
        scores = {r.name: r.value_at(hi - 1) for r in runs}
        valid = {k: v for k, v in scores.items() if not math.isnan(v)}
        leader = min(valid, key=valid.__getitem__) if valid else None
        stages.append({"start": lo, "end": hi, "leader": leader,
                       "policy": next((r.policy for r in runs if r.name == leader), None),
                       "loss_at_end": {k: _nan_none(v) for k, v in scores.items()}})
    switches = sum(1 for a, c in zip(stages, stages[1:]) if a["leader"] != c["leader"])
    return {"stages": stages, "switches": switches,
            "note": "estimated from runs that each trained from step 0; run the composite schedule to confirm"}


def composite_lr(runs: Sequence[EvalRun], comp: dict[str, Any], steps: np.ndarray) -> np.ndarray:
    """The composite schedule's LR at ``steps`` (each stage follows its leader's recorded LR)."""
    by = {r.name: r for r in runs}
    out = np.full(len(steps), np.nan)
    for st in comp["stages"]:
        r = by.get(st["leader"])
        if r is None:
            continue
        m = (steps >= st["start"]) & (steps < st["end"])
        out[m] = np.interp(steps[m], r.steps, r.lr)
    return out


def record_runs(runs: Sequence[EvalRun], budget: int, task: dict[str, Any], db_path: str | None = None,
                metric: str = "loss") -> int:
    """Store each run with a policy in the policy database (source "evaluate"): best and final
    smoothed metric within the first ``budget`` steps, steps run (up to the budget), diverged.
    Returns how many."""
    from .policy_db import PolicyDB

    entries = []
    for r in runs:
        if r.policy is None:
            continue
        last = int(min(budget - 1, r.steps[-1]))
        steps = int(np.count_nonzero(r.steps <= last))
        frac = r.wall_fraction(last)
        wall = None if frac is None else r.wall_time_s * min(1.0, frac)
        entries.append({**task, "policy": r.policy, "metric": metric, "mode": "min",
                        "best_metric": _nan_none(r.best_until(last)), "final_metric": _nan_none(r.value_at(last)),
                        "steps": steps, "wall_time_s": wall, "diverged": not r.healthy_until(last),
                        "source": "evaluate", "notes": f"losswatch evaluate: run {r.name}"})
    db = PolicyDB(db_path)
    try:
        return len(db.add_many(entries))
    finally:
        db.close()


def _nan_none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# --- plots and the HTML page ----------------------------------------------------------------


def plot_png(runs: Sequence[EvalRun], path: str | None = None, comp: dict[str, Any] | None = None,
             metric: str = "loss") -> bytes:
    """LR (top, log scale) and smoothed loss (bottom) per policy; returns the PNG bytes and
    writes them to ``path`` when given. Needs matplotlib (losswatch[dev])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for r in runs:
        line, = ax_lr.plot(r.steps, r.lr, label=r.name, lw=1.2)
        ax_loss.plot(r.steps, r.loss, color=line.get_color(), alpha=0.2, lw=0.6)
        ax_loss.plot(r.steps, r.smoothed, color=line.get_color(), lw=1.5, label=r.name)
        if r.diverged_at is not None:
            ax_loss.axvline(r.diverged_at, color=line.get_color(), ls=":", lw=1)
    if comp is not None:
        allsteps = np.unique(np.concatenate([r.steps for r in runs]))
        ax_lr.plot(allsteps, composite_lr(runs, comp, allsteps), "k--", lw=1.5, label="composite")
        for st in comp["stages"][1:]:
            ax_loss.axvline(st["start"], color="k", lw=0.5, alpha=0.5)
    if np.all(np.concatenate([r.lr[np.isfinite(r.lr)] for r in runs] + [np.array([1.0])]) > 0):
        ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_loss.set_ylabel(f"{metric} (smoothed; raw faint)")
    ax_loss.set_xlabel("step")
    finite = np.concatenate([r.smoothed[np.isfinite(r.smoothed)] for r in runs])
    if finite.size:
        lo, hi = np.percentile(finite, [0, 98])
        ax_loss.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax_lr.legend(fontsize=8, loc="best")
    ax_lr.set_title("LR policies: schedule and loss")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = buf.getvalue()
    if path:
        Path(path).write_bytes(data)
    return data


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "&mdash;"
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, dict):
            return html.escape(json.dumps(v))
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(report: dict[str, Any], runs: Sequence[EvalRun], path: str, png: bytes | None = None) -> None:
    """A self-contained page (the plot inlined as a data: URI, no scripts, no external files)."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>losswatch: LR policy evaluation</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "font-size:13px;text-align:left}th{background:#f3f3f3}.win{font-weight:bold}</style></head><body>",
             "<h1>LR policy evaluation</h1>"]
    if png:
        parts.append(f"<img alt='LR and loss per policy' style='max-width:100%' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("<h2>Runs</h2>")
    parts.append(_table(["run", "policy", "steps", "diverged at", "wall time (s)"],
                        [[r.name, r.policy, int(r.steps[-1]), r.diverged_at, r.wall_time_s] for r in runs]))
    if "selection" in report:
        s = report["selection"]
        parts.append(f"<h2>Single-policy selection within {s['budget']} steps: "
                     f"<span class='win'>{html.escape(str(s['winner']))}</span></h2>")
        parts.append(_table(["run", "best", "final at budget", "diverged at"],
                            [[d["name"], d["best"], d["final"], d["diverged_at"]] for d in s["ranking"]]))
    if "cost" in report:
        c = report["cost"]
        parts.append(f"<h2>Fewest steps to reach {c['target']:g}: <span class='win'>{html.escape(str(c['winner']))}</span></h2>")
        parts.append(_table(["run", "steps to target", "est. wall time (s)"],
                            [[d["name"], d["steps_to_target"], d["est_wall_time_s"]] for d in c["ranking"]]))
    if "composition" in report:
        m = report["composition"]
        parts.append(f"<h2>Multi-policy composition ({m['switches']} switch(es))</h2><p>{html.escape(m['note'])}</p>")
        parts.append(_table(["stage", "leader", "policy"],
                            [[f"{st['start']}-{st['end']}", st["leader"], st["policy"]] for st in m["stages"]]))
    parts.append("</body></html>")
    Path(path).write_text("".join(parts), encoding="utf-8")
