"""How many series /metrics exports with thousands of runs, and that quiet runs drop out.

Starts ``losswatch serve`` (memory store, or ``--store redis://...``) with a short
``LOSSWATCH_METRICS_TTL``, posts a few steps to each of ``--runs`` runs (a share of them
diverging, so they carry active alerts), counts the exported series (every sample line of
/metrics, and the per-run ones apart), waits past the TTL and counts again. The per-run series are
the part that grows with the fleet; they must fall back to zero once the fleet goes quiet.

    .venv/bin/python bench/metrics_cardinality.py [--runs 10000] [--ttl 90] [--out FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.service_proc import ServiceProc  # noqa: E402


def run_records(i: int, n: int = 20) -> list[dict]:
    """A healthy decay, or (every 10th run) one that blows up so it carries active alerts."""
    out = []
    for s in range(n):
        loss = 2.0 * 0.97 ** s + 0.3
        if i % 10 == 0 and s >= 12:
            loss *= 3.0 ** (s - 11)
        out.append({"step": s, "loss": loss, "grad_norm": 1.0, "lr": 1e-3})
    return out


def count_series(port: int) -> tuple[int, int, float]:
    # a fresh connection: uvicorn drops keep-alive connections idle for 5 s
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    dt = time.perf_counter() - t
    samples = [ln for ln in body.splitlines() if ln and not ln.startswith("#")]
    per_run = [ln for ln in samples if ln.startswith("losswatch_run_")]
    return len(samples), len(per_run), dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--ttl", type=int, default=90, help="LOSSWATCH_METRICS_TTL for the run (s)")
    ap.add_argument("--store", default="memory://")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "metrics-cardinality.md"))
    args = ap.parse_args()

    svc = ServiceProc(env={"LOSSWATCH_METRICS_TTL": str(args.ttl), "LOSSWATCH_STORE": args.store}, timeout=60)
    port = svc.port
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        t0 = time.perf_counter()
        for i in range(args.runs):
            body = json.dumps({"records": run_records(i)}).encode()
            conn.request("POST", f"/v1/runs/fleet-{i:05d}/steps?project=p{i % 20}", body,
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit(f"POST failed: {r.status}")
        fill_s = time.perf_counter() - t0
        if fill_s >= args.ttl:
            raise SystemExit(f"filling took {fill_s:.0f} s >= the TTL: raise --ttl")
        active_total, active_run, active_dt = count_series(port)
        time.sleep(args.ttl + 2)  # the last run was written at the end of the fill
        quiet_total, quiet_run, quiet_dt = count_series(port)
    finally:
        svc.stop()

    per = active_run / args.runs
    lines = [
        "# /metrics cardinality",
        "",
        f"Command: `.venv/bin/python bench/metrics_cardinality.py --runs {args.runs} --ttl {args.ttl}"
        f"{'' if args.store == 'memory://' else ' --store ' + args.store}` "
        f"(store {args.store}; 20 steps per run, every 10th run diverging; filling took {fill_s:.0f} s).",
        "",
        "| moment | series exported | of them per-run (`losswatch_run_*`) | GET /metrics |",
        "|---|---:|---:|---:|",
        f"| {args.runs:,} runs active | {active_total:,} | {active_run:,} ({per:.1f} per run) | {active_dt * 1000:.0f} ms |",
        f"| after the TTL ({args.ttl} s quiet) | {quiet_total:,} | {quiet_run:,} | {quiet_dt * 1000:.0f} ms |",
        "",
        "Per run: loss, grad_norm, lr, step, health, last_seen, plus one `losswatch_run_active_alerts` "
        "series per active alert kind. The service-wide series (counters by kind/severity/result/code, "
        "the latency histogram) do not grow with the number of runs.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if quiet_run == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
