"""From the POST that raises a critical alert to the webhook's arrival at its receiver.

A real ``losswatch serve`` (memory store, one worker) with ``--notify`` pointing at a loopback
receiver in this process (a threading HTTP server). Each trial is a fresh run: a healthy prefix
of ``--prefix`` steps (no alert), then one batch whose last record has a NaN loss (the NaN
detector raises a critical alert on that step). Latency = arrival of that alert's notification
at the receiver - the moment the POST /steps that raised it was sent; the POST's own answer time
is reported beside it (the notification leaves after ingest answers, from the service's
background queue).

Usage: ``python bench/notify_latency.py [--trials 50] [--out bench/results/notify.md]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.service_proc import ServiceProc  # noqa: E402


def percentile(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class Receiver:
    """Loopback webhook: records the arrival time of each notification by alert id."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                t = time.perf_counter()
                alert = json.loads(body)["alert"]
                with outer.cond:
                    outer.arrived.setdefault(alert["id"], t)
                    outer.cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, alert_id: str, timeout: float = 60) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: alert_id in self.arrived, timeout):
                raise RuntimeError(f"no notification for {alert_id} within {timeout} s")
            return self.arrived[alert_id]


def records(lo: int, hi: int, seed: int, nan_at: int | None = None) -> list[dict]:
    rng = random.Random(seed * 1_000_003 + lo)
    out = []
    for s in range(lo, hi):
        loss = 2.0 * math.exp(-s / 300) + 0.3 + rng.gauss(0, 0.02)
        out.append({"step": s, "loss": "NaN" if s == nan_at else loss, "grad_norm": 1.0 + rng.gauss(0, 0.05),
                    "lr": 1e-3})
    return out


def post(conn: http.client.HTTPConnection, run_id: str, recs: list[dict]) -> dict:
    conn.request("POST", f"/v1/runs/{run_id}/steps", body=json.dumps({"records": recs}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body[:200])
    return json.loads(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--prefix", type=int, default=100, help="healthy steps before the trigger batch")
    ap.add_argument("--batch", type=int, default=10, help="records in the trigger batch (the NaN is its last)")
    ap.add_argument("--out", type=Path, default=None, help="write the results page here (Markdown)")
    args = ap.parse_args()

    hook = Receiver()
    svc = ServiceProc(args=["--notify", hook.url, "--public-url", "http://127.0.0.1"])
    port = svc.port
    delivered: list[float] = []
    answered: list[float] = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for trial in range(args.trials + 1):             # trial 0 warms up the service
            run_id = f"notify-{trial}"
            post(conn, run_id, records(0, args.prefix, trial))
            last = args.prefix + args.batch - 1
            trigger = records(args.prefix, last + 1, trial, nan_at=last)
            t0 = time.perf_counter()
            res = post(conn, run_id, trigger)
            t_answer = time.perf_counter()
            nan = [a for a in res["alerts"] if a["kind"] == "nan" and a["severity"] == "critical"]
            assert nan, res["alerts"]
            t_hook = hook.wait(nan[0]["id"])
            if trial:
                delivered.append((t_hook - t0) * 1000)
                answered.append((t_answer - t0) * 1000)
        conn.close()
    finally:
        svc.stop()
        hook.server.shutdown()

    rows = [("POST /steps sent -> the webhook's arrival at the receiver", delivered),
            ("POST /steps sent -> its answer (for comparison)", answered)]
    load = os.getloadavg()[0]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cmd = "python bench/notify_latency.py" + "".join(
        f" --{k} {v}" for k, v in (("trials", args.trials), ("prefix", args.prefix), ("batch", args.batch)))
    lines = [
        "# Alert to webhook latency", "",
        f"Measured {when} on {platform.node()} ({os.cpu_count()} CPUs, load average {load:.1f}), "
        "`losswatch serve` with the memory store, one worker, a loopback receiver in the benchmark process.", "",
        f"Command: `{cmd}{' --out ' + str(args.out) if args.out else ''}`", "",
        f"{args.trials} runs, each: {args.prefix} healthy steps, then a batch of {args.batch} records whose last "
        "loss is NaN (a critical `nan` alert on that step).", "",
        "| what | median ms | p99 ms | max ms |", "|---|---:|---:|---:|",
    ]
    for name, vals in rows:
        lines.append(f"| {name} | {statistics.median(vals):.1f} | {percentile(vals, 0.99):.1f} | {max(vals):.1f} |")
    med = statistics.median(delivered)
    lines += ["", f"Goal: under 2 s from the POST that raises a critical alert to the webhook's arrival: "
                  f"median {med:.1f} ms, p99 {percentile(delivered, 0.99):.1f} ms "
                  f"({'met' if percentile(delivered, 0.99) < 2000 else 'NOT met'}). The notification leaves "
                  "from the service's background queue after ingest has answered; the time between the two "
                  "is the hand-over to the receiver's worker and one HTTP POST from a worker thread."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
