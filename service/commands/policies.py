"""``losswatch policies add|best|list|delete``: record and query the LR policy database.

The database is a SQLite file (``--db``, default ``$LOSSWATCH_POLICY_DB`` or
``~/.losswatch/policies.sqlite``), seeded with well-known recipes on first use. Exit status: 0 =
done, 1 = nothing matched (best), 2 = bad input (the message says which field).
"""

from __future__ import annotations

import argparse
import json
import sys


def _task_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--model-family", required=required, help="e.g. gpt2-124m, resnet-50, llama-7b")
    p.add_argument("--dataset", required=required)
    p.add_argument("--optimizer", required=required, help="e.g. adamw, sgd")
    p.add_argument("--batch-size", type=int, required=required)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, help="SQLite file (default $LOSSWATCH_POLICY_DB or "
                                                   "~/.losswatch/policies.sqlite)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = sub.add_parser("add", help="record one outcome (or --json FILE with JSON lines)")
    a.add_argument("--json", metavar="FILE", help="entries as JSON lines ('-' = stdin); all or nothing")
    _task_args(a, required=False)
    a.add_argument("--policy", help='LR schedule as JSON, e.g. \'{"name":"cosine","lr":3e-4,"total_steps":1000}\'')
    a.add_argument("--metric", default="loss")
    a.add_argument("--mode", choices=("min", "max"), default="min", help="min: lower is better (a loss)")
    a.add_argument("--final-metric", type=float)
    a.add_argument("--best-metric", type=float)
    a.add_argument("--steps", type=int)
    a.add_argument("--wall-time", type=float, dest="wall_time_s", help="seconds")
    a.add_argument("--diverged", action="store_true")
    a.add_argument("--notes", default="")
    b = sub.add_parser("best", help="best policy for a task (optionally under a step budget)")
    _task_args(b, required=False)
    b.add_argument("--max-steps", type=int, help="only runs/recipes of at most this many steps")
    b.add_argument("--metric")
    b.add_argument("--format", choices=("text", "json"), default="text")
    ls = sub.add_parser("list", help="list entries")
    _task_args(ls, required=False)
    ls.add_argument("--max-steps", type=int)
    ls.add_argument("--policy-name")
    ls.add_argument("--source")
    ls.add_argument("--limit", type=int, default=1000)
    ls.add_argument("--format", choices=("table", "json"), default="table")
    d = sub.add_parser("delete", help="delete one entry by id")
    d.add_argument("id", type=int)


def _filters(args: argparse.Namespace) -> dict:
    out = {k: getattr(args, k, None) for k in ("model_family", "dataset", "optimizer", "batch_size", "max_steps")}
    for k in ("metric", "policy_name", "source"):
        if getattr(args, k, None) is not None:
            out[k] = getattr(args, k)
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _policy_str(p: dict) -> str:
    return p["name"] + "(" + ", ".join(f"{k}={v}" for k, v in p.items() if k != "name") + ")"


def run(args: argparse.Namespace) -> int:
    from losswatch.service.lr.policy_db import PolicyDB

    try:
        db = PolicyDB(args.db)
    except ValueError as e:
        print(f"losswatch policies: {e}", file=sys.stderr)
        return 2
    try:
        if args.action == "add":
            if args.json:
                fh = sys.stdin if args.json == "-" else open(args.json, encoding="utf-8")
                entries = []
                with fh:
                    for n, line in enumerate(fh, 1):
                        if line.strip():
                            try:
                                entries.append(json.loads(line))
                            except json.JSONDecodeError as e:
                                raise ValueError(f"{args.json}:{n}: not JSON ({e.msg})") from None
                try:
                    added = db.add_many(entries)
                except ValueError as e:
                    raise ValueError(f"nothing added: {e}") from None
                print(f"added {len(added)} entries (ids {', '.join(str(e.id) for e in added)})")
                return 0
            if args.policy is None:
                raise ValueError("--policy (an LR schedule as JSON) or --json FILE is required")
            try:
                policy = json.loads(args.policy)
            except json.JSONDecodeError as e:
                raise ValueError(f"--policy is not JSON ({e.msg})") from None
            d = {k: getattr(args, k) for k in ("model_family", "dataset", "optimizer", "batch_size", "metric", "mode",
                                                "final_metric", "best_metric", "steps", "wall_time_s", "diverged",
                                                "notes")}
            d["policy"] = policy
            e = db.add(d)
            print(f"added entry {e.id}: {e.model_family}/{e.dataset}/{e.optimizer}/bs{e.batch_size} "
                  f"{_policy_str(e.policy)}")
            return 0
        if args.action == "best":
            e = db.best(**_filters(args))
            if e is None:
                print("no matching entry", file=sys.stderr)
                return 1
            if args.format == "json":
                print(json.dumps(e.to_dict()))
            else:
                score = "" if e.score is None else f"  {e.metric} {e.score:.4g}"
                print(f"#{e.id} {e.model_family}/{e.dataset}/{e.optimizer}/bs{e.batch_size}: "
                      f"{_policy_str(e.policy)}  steps {_fmt(e.steps)}{score}  [{e.source}]")
                if e.notes:
                    print(f"   {e.notes}")
            return 0
        if args.action == "list":
            f = _filters(args)
            rows = db.list(limit=args.limit, **f)
            if args.format == "json":
                for e in rows:
                    print(json.dumps(e.to_dict()))
                return 0
            print(f"{'id':>4} {'task':<40} {'policy':<48} {'steps':>8} {'metric':>16} div src")
            for e in rows:
                task = f"{e.model_family}/{e.dataset}/{e.optimizer}/bs{e.batch_size}"
                metric = "-" if e.score is None else f"{e.metric}={e.score:.4g}"
                print(f"{e.id:>4} {task[:40]:<40} {_policy_str(e.policy)[:48]:<48} {_fmt(e.steps):>8} "
                      f"{metric[:16]:>16} {'y' if e.diverged else 'n':>3} {e.source}")
            return 0
        if args.action == "delete":
            if not db.delete(args.id):
                print(f"no entry {args.id}", file=sys.stderr)
                return 1
            print(f"deleted entry {args.id}")
            return 0
    except (ValueError, OSError) as e:
        print(f"losswatch policies {args.action}: {e}", file=sys.stderr)
        return 2
    finally:
        db.close()
    return 2
