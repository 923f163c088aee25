"""``losswatch runs``: the runs a service holds, newest first, as a table.

Columns: run, project, health, last step, last loss, active alerts (how many, and their kinds,
worst first), last seen. Exit status: 0, 1 when the service answered with an error (a refused
token), 2 when no service answered.
"""

from __future__ import annotations

import argparse
import sys

from losswatch.service.remote import LookError, Service, add_service_arguments, to_float
from losswatch.service.terminal import ago, num, table, worst_first


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", help="only this project's runs")
    add_service_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        service = Service.from_args(args)
        try:
            runs = service.runs(project=args.project)
        finally:
            service.close()
    except LookError as e:
        print(f"losswatch runs: {e}", file=sys.stderr)
        return e.exit_code
    if not runs:
        where = f" in project {args.project!r}" if args.project else ""
        print(f"losswatch runs: no runs{where} at {service.url}", file=sys.stderr)
        return 0
    runs.sort(key=lambda r: r.get("last_seen") or r.get("created_at") or 0.0, reverse=True)
    header = ("RUN", "PROJECT", "HEALTH", "LAST STEP", "LOSS", "ACTIVE ALERTS", "LAST SEEN")
    rows = [(r["run_id"], r["project"], r["health"], "-" if r["last_step"] is None else str(r["last_step"]),
             num(to_float(r["last"].get("loss"))), alerts_cell(r["active_alerts"]), ago(r.get("last_seen")))
            for r in runs]
    print(table(header, rows))
    return 0


def alerts_cell(alerts: list[dict]) -> str:
    """'2: nan, divergence' (kinds worst first), '0' when none."""
    if not alerts:
        return "0"
    kinds = list(dict.fromkeys(a["kind"] for a in worst_first(alerts)))
    return f"{len(alerts)}: {', '.join(kinds)}"
