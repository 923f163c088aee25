"""What each of a run's requests costs the service: the metadata PUT against a small POST /steps.

A run's life on the service is a metadata PUT when it starts, batches of steps, and a PUT with
``"status": "finished"`` when it closes; a fleet that starts or closes all at once sends one PUT
per run within a second or two, so the PUT's cost is what such a wave costs. One
``losswatch serve --store redis://`` process and one redis-server (appendonly everysec) are
started on loopback; ``--n`` new runs are each PUT once, then sent one batch of one record, then
PUT again as finished, then PUT that again (a retry), one request at a time over one kept-alive connection. Reported: the
service process's CPU per request (from /proc) and the wall time per request.

    .venv/bin/python bench/request_cost.py --n 1000

Prints a markdown table (copied into bench/results/load.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from fixtures.redis_proc import RedisServer  # noqa: E402
from fixtures.service_proc import ServiceProc  # noqa: E402
from load import cpu_seconds  # noqa: E402

META = {"project": "p", "optimizer": "adamw", "batch_size": 64}
RECORD = {"step": 0, "loss": 1.0, "grad_norm": 1.0, "lr": 3e-4}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="runs (requests of each kind)")
    a = ap.parse_args()
    print(f"(`uptime`: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()})\n")
    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d) / "redis", appendonly=True, appendfsync="everysec").start()
        svc = None
        try:
            svc = ServiceProc(env={"LOSSWATCH_STORE": srv.url}, timeout=60)
            conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)

            def request(method: str, path: str, body: dict) -> None:
                conn.request(method, path, body=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                if reply.status != 200:
                    raise SystemExit(f"{method} {path} -> {reply.status}")

            for i in range(50):  # warm-up: imports, the Redis pool, the detectors' first run
                request("PUT", f"/v1/runs/warm-{i}", META)
                request("POST", f"/v1/runs/warm-{i}/steps", {"project": "p", "records": [RECORD]})
            kinds = [
                ("PUT, a new run's metadata", lambda i: request("PUT", f"/v1/runs/r{i}", META)),
                ("POST /steps, one record", lambda i: request("POST", f"/v1/runs/r{i}/steps",
                                                              {"project": "p", "records": [RECORD]})),
                ("PUT, the same run finished", lambda i: request("PUT", f"/v1/runs/r{i}",
                                                                 {**META, "status": "finished"})),
                ("PUT, the same metadata again (a retry)", lambda i: request("PUT", f"/v1/runs/r{i}",
                                                                              {**META, "status": "finished"})),
            ]
            print("| request | service CPU per request | wall time per request |\n|---|---:|---:|")
            for what, send in kinds:
                c0, t0 = cpu_seconds(svc.proc.pid), time.perf_counter()
                for i in range(a.n):
                    send(i)
                cpu, wall = cpu_seconds(svc.proc.pid) - c0, time.perf_counter() - t0
                print(f"| {what} | {cpu / a.n * 1e6:,.0f} us | {wall / a.n * 1e3:.2f} ms |")
        finally:
            if svc is not None:
                svc.stop()
            srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
