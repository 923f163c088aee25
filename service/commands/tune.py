"""``losswatch tune module:function``: grid or random LR search over LR policies, in parallel local
processes or on Ray Tune; trials the detectors call lost (NaN, divergence) are stopped early;
results can be recorded in the policy database. See ``losswatch.service.lr.tuner``.

Exit status: 0 = a best trial was found, 1 = every trial was lost, 2 = bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", metavar="MODULE:FUNCTION",
                        help="training function train(policy, *, steps, seed, report) -> {'final_loss': ...}")
    parser.add_argument("--policy", action="append", default=None, metavar="JSON",
                        help='schedule template without its LR, e.g. \'{"name":"cosine","total_steps":300}\' '
                             "(repeat for several; default constant)")
    parser.add_argument("--lrs", help="grid search: comma-separated LRs, e.g. 0.01,0.03,0.1")
    parser.add_argument("--samples", type=int, help="random search: this many LRs, log-uniform in --lr-min..--lr-max")
    parser.add_argument("--lr-min", type=float, default=1e-4)
    parser.add_argument("--lr-max", type=float, default=1.0)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds per policy (default 0)")
    parser.add_argument("--search-seed", type=int, default=0, help="seed of the random search")
    parser.add_argument("--steps", type=int, default=300, help="step budget per trial")
    parser.add_argument("--workers", type=int, default=2, help="parallel trials")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--no-early-stop", action="store_true", help="run every trial to the end")
    parser.add_argument("--url", help="stream every trial to this losswatch service (default $LOSSWATCH_URL)")
    parser.add_argument("--project")
    parser.add_argument("--run-prefix", default="tune", help="trial run ids are PREFIX-<trial>")
    parser.add_argument("--record", metavar="TASK_JSON",
                        help='record results in the policy database for this task, e.g. '
                             '\'{"model_family":"mlp","dataset":"digits","optimizer":"sgd","batch_size":32}\'')
    parser.add_argument("--db", help="policy database file (default $LOSSWATCH_POLICY_DB or ~/.losswatch/policies.sqlite)")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    import os

    from losswatch.service.lr import tuner

    try:
        templates = [json.loads(p) for p in (args.policy or ['{"name": "constant"}'])]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if (args.lrs is None) == (args.samples is None):
            raise ValueError("give either --lrs (grid) or --samples (random)")
        if args.lrs is not None:
            lrs = [float(x) for x in args.lrs.split(",") if x.strip()]
            if not lrs or any(not (x > 0) for x in lrs):
                raise ValueError(f"--lrs must be positive numbers, got {args.lrs!r}")
            trials = tuner.grid_trials(templates, lrs, seeds)
        else:
            trials = tuner.random_trials(templates, args.samples, args.lr_min, args.lr_max, args.search_seed, seeds)
        if args.steps < 1 or args.workers < 1:
            raise ValueError("--steps and --workers must be positive")
        task = json.loads(args.record) if args.record else None
        tuner.load_function(args.function)  # fail here, not in every worker
    except json.JSONDecodeError as e:
        print(f"losswatch tune: a JSON argument is not JSON ({e.msg})", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"losswatch tune: {e}", file=sys.stderr)
        return 2
    url = args.url or os.environ.get("LOSSWATCH_URL") or None
    runner = tuner.run_ray if args.backend == "ray" else tuner.run_local
    results = runner(args.function, trials, args.steps, workers=args.workers, early_stop=not args.no_early_stop,
                     url=url, project=args.project, run_prefix=args.run_prefix)
    summ = tuner.summary(results)
    if task is not None:
        try:
            summ["recorded"] = tuner.record_results(results, task, args.db)
        except ValueError as e:
            print(f"losswatch tune: results not recorded: {e}", file=sys.stderr)
            return 2
    if args.format == "json":
        print(json.dumps({"summary": summ, "trials": [r.to_dict() for r in results]}))
    else:
        for r in results:
            fl = "-" if r.final_loss is None else f"{r.final_loss:.4g}"
            state = f"STOPPED at {r.steps_run}: {r.reason[:90]}" if r.stopped_early else f"{r.steps_run} steps"
            print(f"{r.trial_id:<28} final {fl:>9}  {state}")
        print(f"{summ['trials']} trials, {summ['stopped_early']} stopped early; {summ['steps_run']} of "
              f"{summ['steps_budget']} steps run ({100 * summ['steps_saved_fraction']:.0f}% saved)")
        if summ["best"]:
            print(f"best: {summ['best']['trial_id']} {json.dumps(summ['best']['policy'])} "
                  f"final loss {summ['best']['final_loss']:.4g}")
        if "recorded" in summ:
            print(f"recorded {summ['recorded']} trials in the policy database")
    return 0 if summ["best"] else 1
