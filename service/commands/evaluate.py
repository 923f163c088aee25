"""``losswatch evaluate MANIFEST``: compare LR policies over recorded runs.

MANIFEST lists the runs, one JSON object per line (or one JSON list):
``{"path": "runs/cosine.csv", "policy": {"name": "cosine", "lr": 0.1, "total_steps": 3000},
"name": "cosine-0.1", "wall_time_s": 41.0}``. Run files: CSV, JSON lines, trainer_state.json or
TensorBoard logs (as ``losswatch replay``). Exit status 0, or 2 on unreadable input.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST", help="JSON lines: path, policy, name, wall_time_s")
    parser.add_argument("--budget", type=int, help="single-policy selection: best metric within the first N steps "
                                                   "(default: the shortest run's length)")
    parser.add_argument("--target", type=float, help="cost-effective tuning: fewest steps to reach this loss")
    parser.add_argument("--stages", help="multi-policy composition: stage boundaries, e.g. 0,1000,3000")
    parser.add_argument("--metric", choices=("loss", "val_loss"), default="loss")
    parser.add_argument("--smooth", type=int, help="running-median window in steps (default 3%% of a run, >= 11)")
    parser.add_argument("--png", help="write the LR/loss plot here (needs matplotlib)")
    parser.add_argument("--html", help="write a self-contained HTML report here")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--record", metavar="TASK_JSON",
                        help='record each run (best/final within the budget) in the policy database for this task, '
                             'e.g. \'{"model_family":"mlp","dataset":"digits","optimizer":"sgd","batch_size":32}\'')
    parser.add_argument("--db", help="policy database file (default $LOSSWATCH_POLICY_DB or ~/.losswatch/policies.sqlite)")


def run(args: argparse.Namespace) -> int:
    from losswatch.service.lr import evaluator as ev

    try:
        runs = ev.load_manifest(args.manifest, metric=args.metric)
        for r in runs:
            r.prepare(args.smooth)
        if args.budget is not None and args.budget < 1:
            raise ValueError(f"--budget must be at least 1 step, got {args.budget}")
        budget = args.budget if args.budget is not None else int(min(r.steps[-1] for r in runs)) + 1
        report: dict = {"selection": ev.select_policy(runs, budget)}
        if args.target is not None:
            report["cost"] = ev.cost_to_target(runs, args.target)
        if args.stages:
            try:
                bounds = [int(x) for x in args.stages.split(",") if x.strip()]
            except ValueError:
                raise ValueError(f"--stages must be integers separated by commas, got {args.stages!r}") from None
            report["composition"] = ev.compose(runs, bounds)
        if args.record:
            try:
                task = json.loads(args.record)
            except json.JSONDecodeError as e:
                raise ValueError(f"--record is not JSON ({e.msg})") from None
            if not isinstance(task, dict):
                raise ValueError("--record must be a JSON object with the task fields")
            report["recorded"] = ev.record_runs(runs, budget, task, args.db, metric=args.metric)
    except (ValueError, OSError) as e:
        print(f"losswatch evaluate: {e}", file=sys.stderr)
        return 2
    png = None
    if args.png or args.html:
        try:
            png = ev.plot_png(runs, args.png, report.get("composition"), metric=args.metric)
        except ImportError:
            print("losswatch evaluate: matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    if args.html:
        ev.write_html(report, runs, args.html, png)
    if args.format == "json":
        print(json.dumps(report))
        return 0
    s = report["selection"]
    print(f"single-policy selection (best {args.metric} within {s['budget']} steps): winner {s['winner']}")
    for d in s["ranking"]:
        div = f"  diverged at {d['diverged_at']}" if d["diverged_at"] is not None else ""
        best = "-" if d["best"] is None else f"{d['best']:.4g}"
        final = "-" if d["final"] is None else f"{d['final']:.4g}"
        print(f"  {d['name']:<28} best {best:>10}  at budget {final:>10}{div}")
    if "cost" in report:
        c = report["cost"]
        print(f"cost-effective (fewest steps to {args.metric} <= {c['target']:g}): winner {c['winner']}")
        for d in c["ranking"]:
            print(f"  {d['name']:<28} {d['steps_to_target'] if d['steps_to_target'] is not None else 'never':>10}")
    if "composition" in report:
        m = report["composition"]
        print(f"multi-policy composition ({m['switches']} switches; {m['note']}):")
        for st in m["stages"]:
            print(f"  steps {st['start']}-{st['end']}: {st['leader']}")
    if args.png and png:
        print(f"plot: {args.png}")
    if args.html:
        print(f"report: {args.html}")
    if "recorded" in report:
        print(f"recorded {report['recorded']} runs in the policy database")
    return 0
