"""Server CPU per request, batches of 10, of two versions of the service side by side.

On a shared machine a server's CPU per request depends on how busy the machine is while it runs
(a starved server wakes up once per request instead of once per few): rounds run one after the
other can differ by 2x for the same code. Here the two versions run *at the same time*, each under
its own identical load (``bench/ingest_profile.py``'s: 100 runs, batches of 10, round robin over
``--procs`` keep-alive connections), so both see the same machine; each server's CPU (from
/proc/PID/stat) over the window is divided by the requests it answered.

``--alternate`` runs the two versions one after the other instead, each alone on the machine as
``bench/ingest_profile.py``'s ladder runs a server (fresh runs, ``--procs`` connections,
``--seconds``), before/after in one round and after/before in the next, so a drift of the machine's
load between the two falls on both; each round prints the 1-minute load average.

``--in-process`` measures the ASGI app alone instead, without HTTP or sockets: a child process
per version builds the app (``create_app``, its lifespan and store), then drives it with the same
POSTs in a tight loop and reports its CPU (``time.process_time``) per request; the two versions
alternate, ``--rounds`` times. No server wakes up per request there, so the machine's load moves
these figures far less; they leave out uvicorn's ~80 us (the ``raw`` server of ingest_profile.py).

``--before`` is an import root where ``losswatch`` is the earlier version (a folder holding a
``losswatch/`` package or links to a checkout's folders: ``losswatch/{client,detectors,service,
dashboards}`` and an empty ``losswatch/__init__.py``); the current version is whatever the
environment imports. Both stores: the memory store, and Redis (one redis-server started on a free
loopback port, a database each).

    .venv/bin/python bench/ingest_ab.py --before /tmp/before-root [--rounds 3] [--seconds 4]
        [--alternate | --in-process]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ingest as ib  # noqa: E402
import ingest_profile as ip  # noqa: E402


def start_with(root: str | None, kind: str, store_url: str, workdir: Path) -> tuple[subprocess.Popen, int]:
    """A service (``kind`` memory or redis) importing losswatch from ``root`` (None: as we do),
    and its port."""
    saved = os.environ.get("PYTHONPATH")
    port = ib.free_port()
    try:
        if root is not None:
            os.environ["PYTHONPATH"] = root
        return ip.start(kind, store_url, port, workdir), port
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def side_by_side(kind: str, before: str, redis: ip.Redis, seconds: float, procs: int, workdir: Path,
                 tag: str) -> dict[str, dict]:
    started = {"before": start_with(before, kind, redis.url[:-1] + "1" if kind == "redis" else "memory://", workdir),
               "after": start_with(None, kind, redis.url if kind == "redis" else "memory://", workdir)}
    servers = {k: p for k, (p, _) in started.items()}
    ports = {k: port for k, (_, port) in started.items()}
    try:
        for k in servers:  # every run exists before the window
            ip.load(ports[k], procs, 1.0, f"{tag}-warm-{k}", cycle=False)
        cpu0 = {k: ib.cpu_seconds(p.pid) for k, p in servers.items()}
        results: dict[str, dict] = {}

        def run(k: str) -> None:
            results[k] = ip.load(ports[k], procs, seconds, f"{tag}-{k}", cycle=False)

        threads = [threading.Thread(target=run, args=(k,)) for k in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out = {}
        for k, p in servers.items():
            cpu = ib.cpu_seconds(p.pid) - cpu0[k]
            n = results[k]["records"] / ip.BATCH
            out[k] = {"cpu_us_per_request": 1e6 * cpu / max(n, 1), "requests_per_s": results[k]["requests_per_s"],
                      "p50_ms": results[k]["p50_ms"], "errors": results[k]["errors"]}
        return out
    finally:
        for p in servers.values():
            p.terminate()
            p.wait(10)


def alone(kind: str, root: str | None, redis: ip.Redis, seconds: float, procs: int, workdir: Path,
          tag: str) -> dict:
    """One version's server alone under the ladder's load: CPU us per request (the server's and
    Redis'), requests per second, p50."""
    redis.flush()
    proc, port = start_with(root, kind, redis.url if kind == "redis" else "memory://", workdir)
    try:
        cpu0, rcpu0 = ib.cpu_seconds(proc.pid), ib.cpu_seconds(redis.pid())
        r = ip.load(port, procs, seconds, tag, cycle=False)
        cpu, rcpu = ib.cpu_seconds(proc.pid) - cpu0, ib.cpu_seconds(redis.pid()) - rcpu0
    finally:
        proc.terminate()
        proc.wait(10)
    n = max(r["records"] / ip.BATCH, 1)
    return {"cpu_us_per_request": 1e6 * cpu / n, "redis_cpu_us_per_request": 1e6 * rcpu / n,
            "requests_per_s": r["requests_per_s"], "p50_ms": r["p50_ms"], "errors": r["errors"]}


def child(store_url: str, n: int) -> float:
    """In this process: the app driven with ``n`` POSTs after a warm-up of one per run; CPU us
    per request. ``python bench/ingest_ab.py _child STORE_URL N`` prints it (under valgrind, the
    instruction counts of section 4 of bench/results/ingest-breakdown.md)."""
    import asyncio

    from losswatch.service.app import create_app
    from losswatch.service.settings import Settings

    runs = [f"ip-{i}" for i in range(ip.N_RUNS)]
    bodies = ib.make_bodies(runs, ip.BATCH, n + len(runs), seed=3)

    async def main() -> float:
        app = create_app(Settings(store_url=store_url))
        async with app.router.lifespan_context(app):
            async def post(path: str, body: bytes) -> None:
                scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                         "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                         "query_string": b"", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
                         "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                                     (b"content-length", str(len(body)).encode())]}
                sent = []

                async def receive() -> dict:
                    return {"type": "http.request", "body": body, "more_body": False}

                async def send(msg: dict) -> None:
                    sent.append(msg)

                await app(scope, receive, send)
                assert sent[0]["status"] == 200, sent
            for path, body in bodies[:len(runs)]:  # every run exists, as in the servers' warm-up
                await post(path, body)
            t = time.process_time()
            for path, body in bodies[len(runs):]:
                await post(path, body)
            return 1e6 * (time.process_time() - t) / n

    return asyncio.run(main())


def in_process(root: str | None, store_url: str, n: int) -> float:
    """CPU us per request of the ASGI app alone, in a child process importing from ``root``."""
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = root
    out = subprocess.run([sys.executable, __file__, "_child", store_url, str(n)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="import root of the earlier version")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--procs", type=int, default=3, help="load generator processes per server")
    ap.add_argument("--kinds", default="memory,redis")
    ap.add_argument("--alternate", action="store_true", help="the two versions one after the other (see above)")
    ap.add_argument("--in-process", action="store_true", help="the ASGI app alone, no HTTP (see above)")
    ap.add_argument("--requests", type=int, default=3000, help="requests per in-process round")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lw-ab-"))
    redis = ip.Redis(workdir)
    try:
        for rnd in range(args.rounds):
            for kind in args.kinds.split(","):
                redis.flush()
                load0 = os.getloadavg()[0]
                if args.alternate:
                    order = (("before", args.before), ("after", None))
                    for k, root in order if rnd % 2 == 0 else order[::-1]:
                        r = alone(kind, root, redis, args.seconds, args.procs, workdir, f"alt{rnd}-{k}")
                        print(f"round {rnd} {kind:6s} {k:6s} load {os.getloadavg()[0]:5.1f}  "
                              f"{r['cpu_us_per_request']:6.0f} us/request (Redis' own {r['redis_cpu_us_per_request']:4.0f})  "
                              f"{r['requests_per_s']:5.0f} req/s  p50 {r['p50_ms']:.2f} ms  errors {r['errors']}",
                              flush=True)
                    continue
                if args.in_process:
                    url = redis.url if kind == "redis" else "memory://"
                    us = {}
                    for k, root in (("before", args.before), ("after", None)):
                        redis.flush()
                        us[k] = in_process(root, url, args.requests)
                    print(f"round {rnd} {kind:6s} load {load0:5.1f}  in-process: before {us['before']:6.0f} us/request"
                          f"  after {us['after']:6.0f} us/request", flush=True)
                    continue
                r = side_by_side(kind, args.before, redis, args.seconds, args.procs, workdir, f"ab{rnd}")
                print(f"round {rnd} {kind:6s} load {load0:5.1f}  " + "  ".join(
                    f"{k}: {v['cpu_us_per_request']:6.0f} us/request ({v['requests_per_s']:5.0f} req/s, "
                    f"errors {v['errors']})" for k, v in r.items()), flush=True)
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(child(sys.argv[2], int(sys.argv[3])))
    else:
        sys.exit(main())
