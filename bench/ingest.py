"""Service ingest throughput: records per second through real HTTP, one uvicorn worker.

Scenarios, measured in one run on the same server stack (uvicorn + uvloop + httptools):

* ``echo``    a bare FastAPI endpoint that parses the body with orjson and answers the record
              count: the ceiling for this stack, nothing else done;
* ``service`` ``losswatch serve`` (memory store), batches of 1,000 records, detection included,
              every batch new steps of its generator's run;
* ``echo-small``  the echo endpoint with batches of 10 (the per-request ceiling);
* ``small``   ``losswatch serve``, 100 runs each sending batches of 10 (round robin).

The load generator is lean: a few processes, each one keep-alive ``http.client`` connection,
bodies encoded before the clock starts. On a machine with two CPUs or more the server is pinned
to the first CPU and the generators to the others (``--no-pin`` leaves both to the scheduler):
the server's CPU time then is not spent migrating between cores or refilling caches that a
generator evicted. It still shares the machine with everything else running there (on the
shared development machine, other work): figures are medians of ``--repeats`` alternating
rounds. A per-record cost breakdown of the service path measured
in-process (parse, store, detectors) is printed too.

    .venv/bin/python bench/ingest.py [--seconds 6] [--procs 3] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]

ECHO_APP = textwrap.dedent('''
    import orjson
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    app = FastAPI()

    @app.post("/v1/runs/{run_id}/steps")
    async def echo(run_id: str, request: Request) -> Response:
        doc = orjson.loads(await request.body())
        return Response(orjson.dumps({"accepted": len(doc["records"])}), media_type="application/json")

    @app.get("/readyz")
    async def ready() -> dict:
        return {"ready": True}
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_split(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(the server's CPUs, the generators' CPUs), or (None, None) to leave both unpinned."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def start_server(kind: str, port: int, workdir: Path, cpus: set[int] | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSWATCH_")}
    if kind == "echo":
        (workdir / "echo_app.py").write_text(ECHO_APP)
        cmd = [sys.executable, "-m", "uvicorn", "echo_app:app", "--host", "127.0.0.1", "--port", str(port),
               "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]
        cwd = workdir
    else:
        cmd = [sys.executable, "-m", "losswatch.service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cwd = REPO
    # pinned before exec: every thread the server starts inherits it
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         preexec_fn=pin)
    return wait_ready(p, port, kind)


def wait_ready(p: subprocess.Popen, port: int, kind: str) -> subprocess.Popen:
    """``p`` once its server answers /readyz with a 200 (killed, and an error, after 90 s)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise RuntimeError(f"{kind} server did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_bodies(run_ids: list[str], batch: int, n_batches: int, seed: int) -> list[tuple[str, bytes]]:
    """Round robin over run_ids, each batch the next ``batch`` steps of its run; loss decays with
    noise (a healthy run, so the detectors do their usual work and raise nothing)."""
    rng = random.Random(seed)
    next_step = {r: 0 for r in run_ids}
    out = []
    for k in range(n_batches):
        run = run_ids[k % len(run_ids)]
        s0 = next_step[run]
        next_step[run] = s0 + batch
        recs = [{"step": s, "loss": 2.0 / (1 + s / 5000) + 0.01 * rng.random(),
                 "grad_norm": 1.0 + 0.05 * rng.random(), "lr": 3e-4} for s in range(s0, s0 + batch)]
        out.append((f"/v1/runs/{run}/steps", orjson.dumps({"records": recs})))
    return out


def generator(port: int, bodies: list[tuple[str, bytes]], cycle: bool, seconds: float, batch: int,
              start_evt, q, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    lat: list[float] = []
    done = 0
    errors = 0
    start_evt.wait()
    t_end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < t_end:
        if i >= len(bodies):
            if not cycle:
                break
            i = 0
        path, body = bodies[i]
        i += 1
        t = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers)
            r = conn.getresponse()
            payload = r.read()
        except (OSError, http.client.HTTPException):
            # a dropped keep-alive connection (seen under heavy load): count it, reconnect
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        lat.append(time.perf_counter() - t)
        if r.status == 200 and orjson.loads(payload)["accepted"] == batch:
            done += batch
        else:
            errors += 1
    q.put((done, errors, lat, time.perf_counter()))


def measure(port: int, per_proc: list[list[tuple[str, bytes]]], cycle: bool, seconds: float, batch: int,
            cpus: set[int] | None = None) -> dict:
    ctx = mp.get_context("fork")
    start_evt = ctx.Event()
    q = ctx.Queue()
    procs = [ctx.Process(target=generator, args=(port, b, cycle, seconds, batch, start_evt, q, cpus))
             for b in per_proc]
    for p in procs:
        p.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    start_evt.set()
    res = [q.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join()
    t_end = max(r[3] for r in res)
    recs = sum(r[0] for r in res)
    lat = sorted(x for r in res for x in r[2])
    return {"records_per_s": recs / (t_end - t0), "requests_per_s": len(lat) / (t_end - t0),
            "errors": sum(r[1] for r in res), "p50_ms": 1e3 * lat[len(lat) // 2],
            "p99_ms": 1e3 * lat[int(len(lat) * 0.99)], "records": recs}


def breakdown(n_batches: int = 100, batch: int = 1000) -> dict:
    """Per-record CPU cost of the service path, in-process (no HTTP): parse+validate, store,
    detectors. CPU time (process_time), not wall-clock: the machine is shared."""
    import asyncio

    from losswatch.detectors import Engine
    from losswatch.service.ingest import parse_steps
    from losswatch.service.pipeline import IngestPipeline, to_batch
    from losswatch.service.stores.memory import MemoryStore

    bodies = [b for _, b in make_bodies(["b"], batch, n_batches, 1)]
    t = time.process_time()
    cols = [parse_steps(b, 10_000)[0] for b in bodies]
    t_parse = time.process_time() - t
    t = time.process_time()
    batches = [to_batch(c) for c in cols]
    t_batch = time.process_time() - t
    eng = Engine(run_id="b")
    t = time.process_time()
    for b in batches:
        eng.update_batch(b)
    t_engine = time.process_time() - t
    writer = IngestPipeline(MemoryStore())

    async def ingest_all():
        t0 = time.process_time()
        for c in cols:
            await writer.ingest("b", c)
        return time.process_time() - t0

    t_ingest = asyncio.run(ingest_all())
    n = n_batches * batch
    us = lambda x: 1e6 * x / n  # noqa: E731
    return {"parse+validate": us(t_parse), "columns->Batch": us(t_batch), "Engine.update_batch": us(t_engine),
            "pipeline.ingest (classify+Batch+engine+commit)": us(t_ingest)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--procs", type=int, default=3, help="generator processes (one connection each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, help="write a markdown table here")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="leave the server and the generators to the scheduler (pinned by default)")
    args = ap.parse_args()
    server_cpus, gen_cpus = cpu_split(args.pin)
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="lw-bench-"))
    scenarios = ("echo", "service", "echo-small", "small")
    rounds: dict[str, list[dict]] = {k: [] for k in scenarios}
    for rep in range(args.repeats):
        for scen in scenarios:
            port = free_port()
            proc = start_server("echo" if scen.startswith("echo") else "service", port, work, server_cpus)
            try:
                if scen in ("small", "echo-small"):
                    runs = [f"small-{rep}-{i}" for i in range(100)]
                    groups = [runs[i::args.procs] for i in range(args.procs)]
                    per = [make_bodies(g, 10, 6000, seed=i) for i, g in enumerate(groups)]
                    batch = 10
                else:
                    # enough distinct batches for the time budget at up to ~150k records/s
                    n_b = int(150 * args.seconds / args.procs) + 1 if scen == "service" else 50
                    per = [make_bodies([f"{scen}-{rep}-{i}"], 1000, n_b, seed=i) for i in range(args.procs)]
                    batch = 1000
                cpu0 = cpu_seconds(proc.pid)
                r = measure(port, per, cycle=scen.startswith("echo"), seconds=args.seconds, batch=batch,
                            cpus=gen_cpus)
                # records per CPU-second of the server: what the server can do with one core,
                # whatever else the shared machine was running meanwhile
                r["records_per_cpu_s"] = r["records"] / max(cpu_seconds(proc.pid) - cpu0, 1e-9)
            finally:
                proc.terminate()
                proc.wait(10)
            rounds[scen].append(r)
            print(f"round {rep} {scen:8s} {r['records_per_s']:>10,.0f} records/s  "
                  f"{r['records_per_cpu_s']:>10,.0f} records/server-CPU-s  {r['requests_per_s']:>8,.0f} req/s  "
                  f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}", flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rounds.items()}
    bd = breakdown()
    bd_small = breakdown(n_batches=3000, batch=10)
    ratio = med["service"]["records_per_s"] / med["echo"]["records_per_s"]
    ratio_cpu = med["service"]["records_per_cpu_s"] / med["echo"]["records_per_cpu_s"]
    ratio_small = med["small"]["records_per_cpu_s"] / med["echo-small"]["records_per_cpu_s"]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({os.cpu_count()} CPUs, load average before start {os.getloadavg()[0]:.1f}); "
        f"`{' '.join(['python', 'bench/ingest.py'] + sys.argv[1:])}`; medians of {args.repeats} rounds "
        f"of {args.seconds:g} s, {args.procs} generator processes"
        + (f"; server pinned to CPU {sorted(server_cpus)}, generators to {sorted(gen_cpus)}."
           if server_cpus else ", unpinned."),
        "",
        "| scenario | records/s | records per server CPU-second | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"echo": "bare orjson echo (ceiling), batches of 1,000",
             "service": "losswatch serve, memory store, detection, batches of 1,000",
             "echo-small": "bare orjson echo (ceiling), batches of 10",
             "small": "losswatch serve, 100 runs x batches of 10"}
    for k in scenarios:
        m = med[k]
        lines.append(f"| {names[k]} | {m['records_per_s']:,.0f} | {m['records_per_cpu_s']:,.0f} | {m['requests_per_s']:,.0f} | "
                     f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['errors']:.0f} |")
    lines += ["", f"Service / echo ceiling: {100 * ratio:.0f}% by wall-clock throughput, "
                  f"{100 * ratio_cpu:.0f}% per server CPU-second (batches of 1,000); batches of 10: "
                  f"{100 * ratio_small:.0f}% per server CPU-second.", "",
              "CPU cost of the service path in-process, no HTTP (CPU microseconds):", "",
              "| part | per record, batches of 1,000 | per batch of 10 |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.2f} | {10 * bd_small[k]:.0f} |" for k, v in bd.items()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
