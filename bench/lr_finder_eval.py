"""How good is each LR-finder rule? Train small real tasks at each rule's suggested LR and compare
with the best LR of a grid.

Tasks (losswatch.service.lr.examples, torch on CPU, 1 thread): digits MLP (SGD+momentum),
diabetes regression MLP (AdamW), a character-level GRU language model (AdamW).
For each task x seed x sweep configuration (exponential 1e-6..10 over 100 or 300 steps, and a
narrower 1e-4..1 over 100), one LR range test is run through the task's own training function
(a fresh model, LR growing exponentially, stopped once the EMA loss passes 4x its best, as
``client/lr_range_test.py`` does), then three rules read the same sweep:

* ours: ``losswatch.detectors.lr_finder.suggest_lr``;
* torch-lr-finder's: EMA-smoothed loss (smooth_f 0.05), skip 10 first / 5 last points,
  steepest gradient per point (np.gradient over the index), reimplemented from its description;
* Lightning's: bias-corrected EMA (beta 0.98), skip 10 first / 1 last, steepest gradient taken
  against the *linear* LR (np.gradient(loss, lr)), reimplemented from its description.

Each suggested LR is then used as a constant LR for the task's full budget, and the final loss
(mean of the last 10 steps) is compared with the best of a half-decade grid 1e-5..10.

    nice -n 10 .venv/bin/python bench/lr_finder_eval.py [--quick] [--out bench/results/lr_finder_eval.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from losswatch.detectors.lr_finder import suggest_lr
from losswatch.service.lr import examples

TASKS = {"digits-mlp-sgd": (examples.train_digits, 300), "diabetes-mlp-adamw": (examples.train_regression, 300),
         "charlm-gru-adamw": (examples.train_char_lm, 200)}
SWEEPS = {"exp 1e-6..10 x100": (1e-6, 10.0, 100), "exp 1e-6..10 x300": (1e-6, 10.0, 300),
          "exp 1e-4..1 x100": (1e-4, 1.0, 100)}
GRID = [10 ** e for e in np.arange(-5, 1.01, 0.5)]


def sweep(fn, seed: int, lo: float, hi: float, n: int) -> tuple[list[float], list[float]]:
    """Range test through the training function: exponential LR, early stop at 4x the best EMA."""
    gamma = (hi / lo) ** (1 / (n - 1))
    lrs: list[float] = []
    losses: list[float] = []
    ema = [None, math.inf]

    def report(step, loss, lr, grad_norm=None):
        lrs.append(lr)
        losses.append(loss)
        if not math.isfinite(loss):
            return True
        ema[0] = loss if ema[0] is None else 0.9 * ema[0] + 0.1 * loss
        est = ema[0] / (1 - 0.9 ** (step + 1))
        ema[1] = min(ema[1], est)
        return step >= 10 and est > 4 * ema[1]

    fn({"name": "exponential", "lr": lo, "gamma": gamma}, steps=n, seed=seed + 100, report=report)
    return lrs, losses


def rule_torch_lr_finder(lrs, losses, smooth_f=0.05, skip_start=10, skip_end=5):
    sm, out = None, []
    for v in losses:
        if not math.isfinite(v):
            break
        sm = v if sm is None else smooth_f * v + (1 - smooth_f) * sm
        out.append(sm)
    x = np.array(lrs[: len(out)])[skip_start: len(out) - skip_end]
    y = np.array(out)[skip_start: len(out) - skip_end]
    if len(y) < 3:
        return float(lrs[0])
    return float(x[int(np.argmin(np.gradient(y)))])


def rule_lightning(lrs, losses, beta=0.98, skip_begin=10, skip_end=1):
    avg, out = 0.0, []
    for k, v in enumerate(losses):
        if not math.isfinite(v):
            break
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (k + 1)))
    x = np.array(lrs[: len(out)])[skip_begin:-skip_end]
    y = np.array(out)[skip_begin:-skip_end]
    if len(y) < 3:
        return float(lrs[0])
    return float(x[int(np.argmin(np.gradient(y, x)))])


def rule_ours(lrs, losses):
    return suggest_lr(lrs, losses).suggested_lr


RULES = {"losswatch": rule_ours, "torch-lr-finder": rule_torch_lr_finder, "lightning": rule_lightning}


def final_loss(fn, steps, lr, seed) -> float:
    r = fn({"name": "constant", "lr": float(lr)}, steps=steps, seed=seed)
    v = r["final_loss"]
    return v if math.isfinite(v) else math.inf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one seed, one sweep configuration")
    ap.add_argument("--out", default="bench/results/lr_finder_eval.json")
    a = ap.parse_args()
    seeds = [0] if a.quick else list(range(a.seeds))
    sweeps = dict(list(SWEEPS.items())[:1]) if a.quick else SWEEPS
    rows = []
    sweeps_out, grids_out = [], []
    t0 = time.time()
    for task, (fn, steps) in TASKS.items():
        for seed in seeds:
            grid = {lr: final_loss(fn, steps, lr, seed) for lr in GRID}
            best_lr = min(grid, key=grid.get)
            grids_out.append({"task": task, "seed": seed, "grid": [[k, v] for k, v in grid.items()]})
            print(f"{task} seed {seed}: grid best lr {best_lr:.3g} loss {grid[best_lr]:.4g}  ({time.time() - t0:.0f}s)",
                  flush=True)
            for sname, (lo, hi, n) in sweeps.items():
                lrs, losses = sweep(fn, seed, lo, hi, n)
                sweeps_out.append({"task": task, "seed": seed, "sweep": sname, "lrs": lrs, "losses": losses})
                for rname, rule in RULES.items():
                    try:
                        lr = rule(lrs, losses)
                    except ValueError as e:
                        print(f"  {rname} failed on {sname}: {e}")
                        lr = float("nan")
                    loss = final_loss(fn, steps, lr, seed) if math.isfinite(lr) else math.inf
                    rows.append({"task": task, "seed": seed, "sweep": sname, "rule": rname, "lr": lr, "loss": loss,
                                 "best_grid_lr": best_lr, "best_grid_loss": grid[best_lr],
                                 "regret": loss - grid[best_lr], "rel": loss / grid[best_lr]})
                    print(f"  {sname:<20} {rname:<16} lr {lr:9.3g}  loss {loss:8.4g}  best {grid[best_lr]:.4g}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "grids": grids_out, "sweeps": sweeps_out,
                                         "wall_s": time.time() - t0}, indent=1))
    print("\nrule              median loss/best  worst loss/best  within 1.25x of best  (n)")
    for rname in RULES:
        rel = [r["rel"] for r in rows if r["rule"] == rname]
        ok = sum(x <= 1.25 for x in rel)
        print(f"{rname:<17} {statistics.median(rel):16.3g} {max(rel):16.3g} {ok:>12}/{len(rel)}")
    print(f"wall {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
