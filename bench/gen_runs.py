"""Generate the detection benchmark: real training runs of tiny models, logged every step.

Usage::

    nice -n 10 .venv/bin/python bench/gen_runs.py            # all missing runs (resumable)
    .venv/bin/python bench/gen_runs.py --list                # the plan, nothing trained
    .venv/bin/python bench/gen_runs.py --only mlp-adam       # runs whose id contains a string

Each run writes ``bench/runs/<run_id>.csv`` (step,loss,grad_norm,lr,val_loss; %.6g; empty cell =
not logged). Existing CSVs are skipped, so an interrupted generation resumes where it stopped.
Deterministic: the seed fixes the initial weights and the batch order, so the LR siblings of a
run see exactly the same batches; torch uses one thread.

The plan (see :func:`plan`):

* LR ladders: for every family x optimizer x seed, a constant LR at base/100, base/10, base,
  x10, x100, so every run has the counterfactual siblings its label is computed from.
* Healthy runs that look sick: cyclic, one-cycle, warm-up + cosine (flat end), multistep decay,
  each at base/10, base and x10 (again so that the label comes from siblings); the two that
  ramp the LR up also at x100 (divergence part-way up the ramp).
* Schedule bugs (see gen/policies.py), injected NaN batches (persisting, or skipped by a
  GradScaler-like guard), and one corrupted batch (inputs x10, or random targets for the
  language models) that makes a spike.

The labels are NOT written here: bench/labels.py computes them from the CSVs and the plan.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from gen.policies import BUG_POLICIES, declared_schedule, lr_at  # noqa: E402

#: Every SGD run uses heavy-ball momentum 0.9 (what the scorer passes as run metadata).
SGD_MOMENTUM = 0.9

RUNS_DIR = HERE / "runs"
VAL_EVERY = 25
#: steps logged after the first non-finite loss before a lost run is stopped
AFTER_NAN = 30

FAMILIES = {
    # family: (steps, {optimizer: base lr}, optimizer used for the scenario runs)
    "softmax": (600, {"sgd": 1.0, "adam": 0.03}, "sgd"),
    "linreg": (400, {"sgd": 0.01, "adam": 0.01}, "sgd"),
    "mlp": (600, {"sgd": 0.1, "adam": 5e-3}, "adam"),
    "cnn": (600, {"sgd": 0.05, "adam": 5e-3}, "sgd"),
    "rnn": (800, {"sgd": 0.1, "adam": 3e-3}, "sgd"),
    "gpt": (600, {"sgd": 0.1, "adam": 2e-3}, "adam"),
}
LADDER = ((0.01, "d100"), (0.1, "d10"), (1.0, "x1"), (10.0, "x10"), (100.0, "x100"))
SIBLING_LADDER = ((0.1, "d10"), (1.0, "x1"), (10.0, "x10"))
LOOK_SICK = ("cyclic", "one_cycle", "warmup_cosine", "multistep")
RAMPED = ("one_cycle", "warmup_cosine")
SEEDS = (0, 1)


def _ladder_runs(family, opt, policy, seed, rungs, steps, base):
    ids = [f"{family}-{opt}-{policy}-{tag}-s{seed}" for _, tag in rungs]
    out = []
    for i, (mult, tag) in enumerate(rungs):
        lr = base * mult
        out.append(
            {
                "run_id": ids[i],
                "family": family,
                "optimizer": opt,
                "scenario": "lr_ladder" if policy == "constant" else "look_sick",
                "policy": policy,
                "base_lr": base,
                "lr_mult": mult,
                "lr": lr,
                "seed": seed,
                "steps": steps,
                "declared_schedule": declared_schedule(policy, lr, steps),
                "ladder": ids,
                "siblings": {
                    "lr_div10": ids[i - 1] if i > 0 else None,
                    "lr_x10": ids[i + 1] if i + 1 < len(ids) else None,
                },
                "injection": None,
            }
        )
    return out


def plan(seeds: tuple[int, ...] = SEEDS, sick_seeds: tuple[int, ...] = (0,), injections: bool = True) -> list[dict]:
    """Every run of the benchmark, in generation order (cheap families first).

    The defaults are the benchmark; other seeds (and no injected runs) give a held-out set of the
    same configurations (bench/holdout.py)."""
    runs: list[dict] = []
    for family, (steps, bases, main_opt) in FAMILIES.items():
        for opt, base in bases.items():
            for seed in seeds:
                runs += _ladder_runs(family, opt, "constant", seed, LADDER, steps, base)
        base = bases[main_opt]
        for seed in sick_seeds:
            for policy in LOOK_SICK:
                # schedules that ramp the LR up get an x100 rung too: a run that diverges part-way
                # up its ramp (BLOOM 104B diverged at the end of its warm-up) is a late divergence
                # with a build-up, where lead time means something
                rungs = SIBLING_LADDER + ((100.0, "x100"),) if policy in RAMPED else SIBLING_LADDER
                runs += _ladder_runs(family, main_opt, policy, seed, rungs, steps, base)
        if not injections:
            continue
        for policy in BUG_POLICIES:
            runs.append(_single(family, main_opt, "schedule_bug", policy, base, steps, None))
        at = int(steps * 0.4) + 7  # not a round number: nothing else happens there
        runs.append(_single(family, main_opt, "nan_batch", "constant", base, steps, {"type": "nan_persist", "step": at}))
        runs.append(_single(family, main_opt, "nan_batch_skipped", "constant", base, steps, {"type": "nan_skip", "step": at}))
        for opt, b in bases.items():
            runs.append(_single(family, opt, "spike", "constant", b, steps, {"type": "corrupt_batch", "step": int(steps * 0.5) + 3}))
    return runs


def _single(family, opt, scenario, policy, base, steps, injection):
    tag = policy if scenario == "schedule_bug" else scenario
    return {
        "run_id": f"{family}-{opt}-{tag}-x1-s0",
        "family": family,
        "optimizer": opt,
        "scenario": scenario,
        "policy": policy,
        "base_lr": base,
        "lr_mult": 1.0,
        "lr": base,
        "seed": 0,
        "steps": steps,
        "declared_schedule": declared_schedule(policy, base, steps),
        "ladder": [],
        "siblings": {"lr_div10": None, "lr_x10": None},
        "injection": injection,
    }


def _fmt(v) -> str:
    return "" if v is None else "%.6g" % v


def train(cfg: dict, task) -> list[tuple]:
    """Train one run; returns rows (step, loss, grad_norm, lr, val_loss)."""
    import torch

    torch.manual_seed(cfg["seed"])
    model = task.model()
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=SGD_MOMENTUM)
    else:
        opt = torch.optim.Adam(params, lr=cfg["lr"])
    gen = torch.Generator().manual_seed(10_000 + cfg["seed"])
    inj = cfg["injection"] or {}
    rows = []
    first_bad = None
    total = cfg["steps"]
    for s in range(total):
        lr = lr_at(cfg["policy"], cfg["lr"], total, s)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = task.batch(gen)  # drawn every step so that the batch order never shifts
        here = inj.get("step") == s
        val = None
        if s % VAL_EVERY == 0 or s == total - 1:
            model.eval()
            with torch.no_grad():
                val = float(task.loss(model, task.val()))
            model.train()
        model.zero_grad(set_to_none=True)
        if here and inj["type"] == "corrupt_batch":
            batch = task.corrupt(batch)
        loss = task.loss(model, batch, poison=here and inj["type"] in ("nan_persist", "nan_skip"))
        lv = float(loss.detach())
        if inj.get("type") == "nan_skip" and not math.isfinite(lv):
            gn = float("nan")  # a GradScaler-style guard: skip the step, weights untouched
        else:
            loss.backward()
            grads = [p.grad.detach().pow(2).sum() for p in params if p.grad is not None]
            gn = float(torch.sqrt(torch.stack(grads).sum()))
            opt.step()
        rows.append((s, lv, gn, lr, val))
        if not math.isfinite(lv) and first_bad is None and inj.get("type") != "nan_skip":
            first_bad = s
        if first_bad is not None and s >= first_bad + AFTER_NAN:
            break
    return rows


def write_csv(path: Path, rows: list[tuple]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("step,loss,grad_norm,lr,val_loss\n")
        for r in rows:
            f.write(",".join((str(r[0]), *(_fmt(v) for v in r[1:]))) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print the plan and exit")
    ap.add_argument("--only", default="", help="only runs whose id contains this string")
    ap.add_argument("--out", default=str(RUNS_DIR))
    args = ap.parse_args(argv)
    runs = [r for r in plan() if args.only in r["run_id"]]
    if args.list:
        for r in runs:
            print(r["run_id"], r["lr"], r["injection"] or "")
        print(len(runs), "runs")
        return 0
    generate(runs, Path(args.out))
    return 0


def generate(runs: list[dict], out: Path) -> None:
    """Train every run of ``runs`` that has no CSV in ``out`` yet (resumable)."""
    import torch

    torch.set_num_threads(1)
    from gen.tasks import make_task

    out.mkdir(parents=True, exist_ok=True)
    tasks: dict = {}
    t_all = time.process_time()
    for i, cfg in enumerate(runs):
        path = out / f"{cfg['run_id']}.csv"
        if path.exists():
            continue
        if cfg["family"] not in tasks:
            tasks[cfg["family"]] = make_task(cfg["family"])
        t0 = time.process_time()
        rows = train(cfg, tasks[cfg["family"]])
        write_csv(path, rows)
        last = rows[-1]
        print(f"[{i + 1}/{len(runs)}] {cfg['run_id']}: {len(rows)} steps, loss {rows[0][1]:.3g} -> {last[1]:.3g}, "
              f"{time.process_time() - t0:.1f}s cpu", flush=True)
    print(f"done, {time.process_time() - t_all:.0f}s cpu", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
