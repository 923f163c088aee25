"""Where a POST /v1/runs/{id}/steps with 10 records spends the server's CPU.

Four measurements, each on the regime of ``bench/ingest.py``'s ``small`` scenario (100 runs, each
sending batches of 10 records, round robin; a few keep-alive load generator processes):

1. **Per-request server CPU, a ladder of servers** (no profiler): the server process's own CPU
   time (user + system, from /proc/PID/stat before and after the load) divided by the requests
   it answered, for

   * ``raw``     a bare ASGI callable under the same uvicorn (uvloop + httptools) that reads the
                 body and answers a fixed ``{"accepted":10}``: uvicorn, HTTP parsing, the event
                 loop and the sockets, nothing else;
   * ``echo``    ``bench/ingest.py``'s FastAPI echo (one route, orjson parse, orjson answer):
                 ``raw`` plus FastAPI/Starlette's per-request machinery;
   * ``memory``  the service (``create_app``, as ``losswatch serve`` builds it) on the memory store;
   * ``redis``   the service on a Redis server this script starts on a free loopback port
                 (``redis-server --save '' --appendonly no``; stopped at the end).

2. **The service path's parts in-process** (no HTTP, no profiler): CPU time of each step of
   ``ingest_steps`` run in a loop on the same bodies: body parsing, auth/scope, the store's ingest
   (memory; Redis with its round trip) through the ingest pipeline, inside it the detectors (``to_batch`` +
   ``Engine.update_batch``) and the engine snapshot (``Engine.to_bytes``, Redis only), metrics,
   response serialisation.

3. **The parts clocked inside the running server** (no profiler): the service under one
   connection's load (one request in flight), with a ``time.thread_time()`` clock around each
   part of the ingest path (:func:`instrumented_app` wraps the functions; the product code is
   unchanged): each part's exclusive CPU per request, and everything outside the ASGI app
   (uvicorn, HTTP, the loop) as one part. The clock costs about 0.6 us a call, ~20 calls a request.

4. **cProfile of the running server** (``--profile``): the service under load with cProfile
   switched on for the measured window only (SIGUSR1 on, SIGUSR2 off and dump); self time is
   grouped by the code it belongs to (uvicorn/event loop, Starlette/FastAPI, the service's
   modules, the detectors, numpy, redis-py, prometheus_client; a C builtin counts for the code
   that called it). cProfile inflates code made of many small Python calls, so the shares are
   evidence of where the time goes, the microseconds come from 1 to 3.

Prints the figures as markdown tables (bench/results/ingest-breakdown.md quotes them) and with
``--out`` writes them all as JSON.

    .venv/bin/python bench/ingest_profile.py [--seconds 4] [--repeats 3]
        [--procs 3] [--profile] [--out bench/results/ingest-breakdown.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ingest as ib  # noqa: E402  (bench/ingest.py: load generator, bodies, /proc CPU)

RAW_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"accepted":10}'})
'''

N_RUNS = 100
BATCH = 10


# --- the server process ------------------------------------------------------------------------

def serve(kind: str, port: int, workdir: Path, profile_out: Path | None) -> None:
    """Run one server in this process (uvloop + httptools, as ``losswatch serve``); with
    ``profile_out``, SIGUSR1 starts cProfile and SIGUSR2 stops it and writes the stats."""
    import uvicorn

    sys.path.insert(0, str(workdir))
    if kind == "raw":
        (workdir / "raw_app.py").write_text(RAW_APP)
        target, factory = "raw_app:app", False
    elif kind == "echo":
        (workdir / "echo_app.py").write_text(ib.ECHO_APP)
        target, factory = "echo_app:app", False
    else:
        target, factory = "losswatch.service.app:create_app", True
    if profile_out is not None and profile_out.suffix == ".json":
        target, factory = instrumented_app(profile_out), False
    elif profile_out is not None:
        import cProfile

        prof = cProfile.Profile()
        signal.signal(signal.SIGUSR1, lambda *_: prof.enable())

        def stop(*_):
            prof.disable()
            part = profile_out.with_name(profile_out.name + ".part")
            prof.dump_stats(str(part))
            part.rename(profile_out)  # whole or absent: the reader waits for the name

        signal.signal(signal.SIGUSR2, stop)
    uvicorn.run(target, factory=factory, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


BASE = "uvicorn/HTTP/event loop (outside the app)"
ROUND_TRIP = "Redis round trip (EVALSHA COMMIT: encode, send, wait, parse)"


def instrumented_app(out: Path):
    """The service app with a CPU clock (``time.thread_time``) around each part of the ingest
    path: every part's *exclusive* time (a nested part's time is its own, not its caller's).
    Measured with one connection, so one request is in flight and a part that awaits Redis
    also owns the loop's CPU while it waits. SIGUSR1 resets, SIGUSR2 writes ``out`` (JSON)."""
    import gc
    from collections import defaultdict

    import prometheus_client.metrics as pm

    from losswatch.detectors import Engine
    from losswatch.service import app as app_mod
    from losswatch.service import metrics as met
    from losswatch.service import pipeline
    from losswatch.service.api import steps
    from losswatch.service.stores import memory
    from losswatch.service.stores import redis as rstore

    tt = time.thread_time
    acc: dict[str, float] = defaultdict(float)
    stack = [BASE]
    last = [tt()]
    count = [0]

    def enter(name: str) -> None:
        now = tt()
        acc[stack[-1]] += now - last[0]
        last[0] = now
        stack.append(name)

    def leave() -> None:
        now = tt()
        acc[stack.pop()] += now - last[0]
        last[0] = now

    def sync(fn, name):
        def w(*a, **k):
            enter(name)
            try:
                return fn(*a, **k)
            finally:
                leave()
        return w

    def asyn(fn, name):
        async def w(*a, **k):
            enter(name)
            try:
                return await fn(*a, **k)
            finally:
                leave()
        return w

    gc.callbacks.append(lambda phase, _info: enter("garbage collector") if phase == "start" else leave())
    FW = ("ASGI middleware and request/response (Starlette's error middleware, BodyLimit, IngestRoute: "
          "path, headers, body, reply)")
    AUTH = "auth/scope + label checks"
    for mod, name, part in ((steps, "scope_for", AUTH), (steps, "request_project", AUTH),
                            (steps, "_check_label", AUTH), (steps, "parse_steps", "body parsing (service/ingest.py)"),
                            (steps, "json_bytes", "response serialisation"),
                            (steps, "encode_floats", "response serialisation"),
                            (pipeline, "run_engine", "detectors (to_batch + Engine.update_batch + advice)")):
        setattr(mod, name, sync(getattr(mod, name), part))
    rjson = types.SimpleNamespace(**vars(rstore.json))
    rjson.dumps = sync(rstore.json.dumps, "store: json.dumps of alerts/advice/last values (Redis)")
    rstore.json = rjson
    rstore.ser.pack_rows = sync(rstore.ser.pack_rows, "store: pack_rows (Redis)")
    Engine.to_bytes = sync(Engine.to_bytes, "engine snapshot (Engine.to_bytes, Redis only)")
    try:        # the store's own connection pool; a tree before it called COMMIT through redis-py
        from losswatch.service.stores import redis_wire
        redis_wire.WirePool.execute = asyn(redis_wire.WirePool.execute, ROUND_TRIP)
    except ImportError:
        import redis.commands.core as rcore
        rcore.AsyncScript.__call__ = asyn(rcore.AsyncScript.__call__, ROUND_TRIP)
    rstore.script_args = sync(rstore.script_args, "store: script_args (the COMMIT arguments as MessagePack)")
    for cls, meth in ((pm.Counter, "inc"), (pm.Histogram, "observe"), (met.ServiceMetrics, "request")):
        setattr(cls, meth, sync(getattr(cls, meth), "metrics"))
    pipeline.IngestPipeline.ingest = asyn(pipeline.IngestPipeline.ingest, "ingest pipeline (own code)")
    memory.MemoryStore.commit = asyn(memory.MemoryStore.commit, "store (own code)")
    rstore.RedisStore.commit = asyn(rstore.RedisStore.commit, "store (own code)")
    parse = steps.parse_steps

    def counted_parse(*a, **k):
        count[0] += 1
        return parse(*a, **k)
    steps.parse_steps = counted_parse
    # IngestRoute calls it by its module-level name
    steps.ingest_steps = asyn(steps.ingest_steps, "ingest_steps (own code)")
    fastapi_app = app_mod.create_app()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return await fastapi_app(scope, receive, send)
        enter(FW)
        try:
            await fastapi_app(scope, asyn(receive, BASE), asyn(send, BASE))
        finally:
            leave()

    def reset(*_):
        acc.clear()
        count[0] = 0
        last[0] = tt()

    def dump(*_):
        leave_now = tt()
        acc[stack[-1]] += leave_now - last[0]
        last[0] = leave_now
        part = out.with_name(out.name + ".part")
        part.write_text(json.dumps({"requests": count[0], "cpu_s": dict(acc)}))
        part.rename(out)  # whole or absent: the reader waits for the name

    signal.signal(signal.SIGUSR1, reset)
    signal.signal(signal.SIGUSR2, dump)
    return app


def measured_window(kind: str, redis: "Redis", port: int, workdir: Path, out: Path, procs: int,
                    seconds: float, tag: str) -> tuple[dict, float]:
    """Start the server writing ``out``; warm every run up; measure ``seconds`` of load between
    SIGUSR1 and SIGUSR2; wait for ``out``. Returns the load's figures and the server's CPU seconds."""
    proc = start(kind, redis.url if kind == "redis" else "memory://", port, workdir, profile_out=out)
    try:
        load(port, procs, 1.0, f"{tag}-warm-{kind}", cycle=False)  # every run exists before the window
        os.kill(proc.pid, signal.SIGUSR1)
        cpu0 = ib.cpu_seconds(proc.pid)
        r = load(port, procs, seconds, f"{tag}-{kind}", cycle=False)
        cpu = ib.cpu_seconds(proc.pid) - cpu0
        os.kill(proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not out.exists():  # written whole under its name (a rename)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server wrote no {out.name}")
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    return r, cpu


def instrumented(kind: str, redis: "Redis", seconds: float, workdir: Path) -> dict:
    """Exclusive CPU per part (us per request) of the service under one connection's load."""
    redis.flush()
    port = ib.free_port()
    out = workdir / f"{kind}-parts.json"
    r, cpu = measured_window(kind, redis, port, workdir, out, 1, seconds, "inst")
    d = json.loads(out.read_text())
    n = d["requests"]
    parts_us = {k: 1e6 * v / n for k, v in sorted(d["cpu_s"].items(), key=lambda x: -x[1])}
    return {"requests": n, "requests_per_s": r["requests_per_s"], "process_cpu_us_per_request": 1e6 * cpu / n,
            "thread_cpu_us_per_request": sum(parts_us.values()), "parts_us": parts_us}


def start(kind: str, store_url: str, port: int, workdir: Path, profile_out: Path | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSWATCH_")}
    env["LOSSWATCH_STORE"] = store_url
    cmd = [sys.executable, __file__, "_serve", kind, str(port), str(workdir)]
    if profile_out is not None:
        cmd.append(str(profile_out))
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ib.wait_ready(p, port, kind)


def load(port: int, procs: int, seconds: float, tag: str, cycle: bool) -> dict:
    runs = [f"{tag}-{i}" for i in range(N_RUNS)]
    groups = [runs[i::procs] for i in range(procs)]
    per = [ib.make_bodies(g, BATCH, 8000, seed=i) for i, g in enumerate(groups)]
    return ib.measure(port, per, cycle=cycle, seconds=seconds, batch=BATCH)


class Redis:
    """A throwaway redis-server on a free loopback port (no persistence)."""

    def __init__(self, workdir: Path) -> None:
        self.port = ib.free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir()
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--daemonize", "yes", "--dir", str(self.dir),
                        "--pidfile", str(self.dir / "redis.pid")], check=True, stdout=subprocess.DEVNULL)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() == b"PONG":
                break
            time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def pid(self) -> int:
        return int((self.dir / "redis.pid").read_text())

    def flush(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "flushall"], check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)


def ladder(kinds: list[str], redis: Redis, seconds: float, repeats: int, procs: int, workdir: Path) -> dict:
    """Per-request server CPU (us) and throughput for each kind, medians of alternating rounds."""
    rounds: dict[str, list[dict]] = {k: [] for k in kinds}
    for rep in range(repeats):
        for kind in kinds:
            redis.flush()
            port = ib.free_port()
            url = redis.url if kind == "redis" else "memory://"
            proc = start(kind, url, port, workdir)
            try:
                cpu0, rcpu0 = ib.cpu_seconds(proc.pid), ib.cpu_seconds(redis.pid())
                r = load(port, procs, seconds, f"{kind}-{rep}", cycle=kind in ("raw", "echo"))
                cpu = ib.cpu_seconds(proc.pid) - cpu0
                rcpu = ib.cpu_seconds(redis.pid()) - rcpu0
            finally:
                proc.terminate()
                proc.wait(10)
            n_req = r["records"] / BATCH
            r["cpu_us_per_request"] = 1e6 * cpu / max(n_req, 1)
            r["redis_server_cpu_us_per_request"] = 1e6 * rcpu / max(n_req, 1)
            r["requests"] = n_req
            rounds[kind].append(r)
            print(f"round {rep} {kind:7s} {r['cpu_us_per_request']:7.0f} us server CPU/request  "
                  f"{r['requests_per_s']:6.0f} req/s  p50 {r['p50_ms']:.2f} ms  errors {r['errors']}", flush=True)
    return {k: {m: statistics.median(x[m] for x in v) for m in v[0]} | {"rounds": [x["cpu_us_per_request"] for x in v]}
            for k, v in rounds.items()}


# --- the parts, in-process ---------------------------------------------------------------------

def parts(redis_url: str, n_batches: int = 3000) -> dict[str, dict[str, float]]:
    """CPU us per batch of 10 of each step of post_steps, in-process on the same bodies."""
    from losswatch.detectors import Engine
    from losswatch.detectors.wire import encode_floats
    from losswatch.service.api.common import json_response, request_project
    from losswatch.service.auth import scope_for
    from losswatch.service.ingest import parse_steps
    from losswatch.service.metrics import ServiceMetrics
    from losswatch.service.pipeline import IngestPipeline, to_batch
    from losswatch.service.stores.memory import MemoryStore
    from losswatch.service.stores.redis import RedisStore

    runs = [f"part-{i}" for i in range(N_RUNS)]
    bodies = ib.make_bodies(runs, BATCH, n_batches, seed=7)
    run_of = [path.split("/")[3] for path, _ in bodies]
    us = lambda t: 1e6 * t / n_batches  # noqa: E731
    out: dict[str, dict[str, float]] = {}

    t = time.process_time()
    cols = [parse_steps(b, 10_000)[0] for _, b in bodies]
    common = {"body parsing (parse_steps)": us(time.process_time() - t)}
    t = time.process_time()
    for _ in range(n_batches):
        request_project(scope_for({}, None), None, None)
    common["auth/scope (scope_for + request_project)"] = us(time.process_time() - t)
    t = time.process_time()
    batches = [to_batch(c) for c in cols]
    common["columns -> detector Batch (to_batch)"] = us(time.process_time() - t)
    engines = {r: Engine(run_id=r) for r in runs}
    for r, b in zip(run_of[:N_RUNS], batches[:N_RUNS]):   # warm, as the store's runs are
        engines[r].update_batch(b)
    t = time.process_time()
    for r, b in zip(run_of[N_RUNS:], batches[N_RUNS:]):
        engines[r].update_batch(b)
    common["detectors (Engine.update_batch)"] = us((time.process_time() - t) * n_batches / (n_batches - N_RUNS))
    t = time.process_time()
    for r in run_of:
        e = engines[r]
        _ = e.recommendation, e.health
    common["engine.recommendation + health"] = us(time.process_time() - t)
    t = time.process_time()
    for r in run_of:
        engines[r].to_bytes()
    common["engine snapshot (Engine.to_bytes)"] = us(time.process_time() - t)
    m = ServiceMetrics()
    t = time.process_time()
    for _ in range(n_batches):
        t0 = time.perf_counter()
        m.accepted.inc(10)
        m.request(200)
        m.ingest_latency.observe(time.perf_counter() - t0)
    common["metrics (2 counters + histogram)"] = us(time.process_time() - t)
    reply = {"accepted": 10, "duplicates": 0, "out_of_order": 0, "alerts": [],
             "recommendation": None, "health": "ok"}
    rec = engines[runs[0]].recommendation
    reply["recommendation"] = rec.to_dict() if rec is not None else None
    t = time.process_time()
    for _ in range(n_batches):
        json_response({**reply, "recommendation": encode_floats(reply["recommendation"])})
    common["response serialisation (encode_floats + orjson + Response)"] = us(time.process_time() - t)
    out["common"] = common

    async def ingest_all(store) -> float:
        writer = IngestPipeline(store)
        for c, r in zip(cols[:N_RUNS], run_of):   # warm: every run exists, every engine cached
            await writer.ingest(r, c)
        t0 = time.process_time()
        for c, r in zip(cols[N_RUNS:], run_of[N_RUNS:]):
            await writer.ingest(r, c)
        dt = (time.process_time() - t0) * n_batches / (n_batches - N_RUNS)
        await store.close()
        return dt

    out["pipeline.ingest"] = {
        "memory (classify + detectors + alerts + commit)": us(asyncio.run(ingest_all(MemoryStore()))),
        "redis (classify + detectors + to_bytes + Lua COMMIT round trip)": us(asyncio.run(ingest_all(RedisStore(redis_url)))),
    }
    return out


# --- the profile -------------------------------------------------------------------------------

GROUPS = (  # (group, substring of the file path or function name), first match wins
    ("notifications enqueue", "service/notify.py"),
    ("response serialisation", "json_response"),
    ("response serialisation", "encode_floats"),
    ("response serialisation", "detectors/wire.py"),
    ("detectors (Engine.update_batch, to_batch)", "detectors/"),
    ("detectors (Engine.update_batch, to_batch)", "to_batch"),
    ("detectors (Engine.update_batch, to_batch)", "column_array"),
    ("detectors (Engine.update_batch, to_batch)", "numpy"),
    ("body parsing (service/ingest.py)", "service/ingest.py"),
    ("auth/scope", "service/auth.py"),
    ("auth/scope", "request_project"),
    ("metrics (prometheus_client)", "service/metrics.py"),
    ("metrics (prometheus_client)", "prometheus_client"),
    ("store (memory / Redis client, Lua call)", "service/stores/"),
    ("store (memory / Redis client, Lua call)", "/redis/"),
    ("store (memory / Redis client, Lua call)", "hiredis"),
    ("ingest_steps and IngestRoute (service/api/steps.py)", "service/api/steps.py"),
    ("BodyLimit middleware", "service/app.py"),
    ("FastAPI/Starlette request machinery", "starlette/"),
    ("FastAPI/Starlette request machinery", "fastapi/"),
    ("FastAPI/Starlette request machinery", "anyio/"),
    ("FastAPI/Starlette request machinery", "pydantic"),
    ("FastAPI/Starlette request machinery", "typing"),
    ("uvicorn/HTTP parsing/event loop", "uvicorn/"),
    ("uvicorn/HTTP parsing/event loop", "asyncio/"),
    ("uvicorn/HTTP parsing/event loop", "uvloop"),
    ("uvicorn/HTTP parsing/event loop", "httptools"),
)


def _group(func: tuple[str, int, str]) -> str | None:
    path, _, name = func
    s = f"{path}:{name}"
    for g, needle in GROUPS:
        if needle in s:
            return g
    return None


def _short(path: str) -> str:
    """A source path without the machine's prefix (the package's or the standard library's)."""
    return re.sub(r"^.*/(site-packages|losswatch|python3\.\d+)/", "", path)


def grouped_profile(stats_file: Path, n_requests: float) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """Self time per group in us per request; a builtin (path "~") or an unmatched function goes
    to its callers' groups in proportion to the time each caller spent in it."""
    import pstats

    st = pstats.Stats(str(stats_file)).stats  # func -> (cc, nc, tt, ct, callers)
    groups: dict[str, float] = {}
    memo: dict = {}

    def share(func, depth=0) -> dict[str, float]:
        """Fractions of ``func``'s self time per group."""
        g = _group(func)
        if g is not None:
            return {g: 1.0}
        if func in memo:
            return memo[func]
        memo[func] = {"other": 1.0}              # recursion guard
        callers = st[func][4] if func in st else {}
        tot = sum(v[3] for v in callers.values()) if callers else 0.0
        res: dict[str, float] = {}
        if depth < 20 and tot > 0:
            for caller, v in callers.items():
                for g2, f in share(caller, depth + 1).items():
                    res[g2] = res.get(g2, 0.0) + f * v[3] / tot
        memo[func] = res or {"uvicorn/HTTP parsing/event loop": 1.0}
        return memo[func]

    top = []
    for func, (_, _, tt, _, _) in st.items():
        for g, f in share(func).items():
            groups[g] = groups.get(g, 0.0) + f * tt
        top.append((tt, f"{_short(func[0])}:{func[1]} {func[2]}"))
    top.sort(reverse=True)
    return ({g: 1e6 * v / n_requests for g, v in sorted(groups.items(), key=lambda x: -x[1])},
            [(1e6 * t / n_requests, name) for t, name in top[:25]])


def profile(kind: str, redis: Redis, seconds: float, procs: int, workdir: Path) -> dict:
    redis.flush()
    port = ib.free_port()
    out = workdir / f"{kind}.prof"
    r, cpu = measured_window(kind, redis, port, workdir, out, procs, seconds, "prof")
    n = r["records"] / BATCH
    groups, top = grouped_profile(out, n)
    return {"cpu_us_per_request_profiled": 1e6 * cpu / n, "requests": n, "groups_us": groups, "top_self_us": top}


def tables(res: dict) -> str:
    """The figures as markdown tables."""
    lad = res["ladder"]
    lines = ["| server | server CPU per request, us (median) | rounds | Redis server CPU per request, us | requests/s | p50 ms |",
             "|---|---:|---|---:|---:|---:|"]
    for k, v in lad.items():
        lines.append(f"| {k} | {v['cpu_us_per_request']:.0f} | {', '.join(f'{x:.0f}' for x in v['rounds'])} | "
                     f"{v['redis_server_cpu_us_per_request']:.0f} | {v['requests_per_s']:,.0f} | {v['p50_ms']:.2f} |")
    inst = res.get("instrumented", {})
    if inst:
        names = sorted({p for v in inst.values() for p in v["parts_us"]},
                       key=lambda p: -max(v["parts_us"].get(p, 0) for v in inst.values()))
        lines += ["", "| part (exclusive CPU) | " + " | ".join(f"{k}: us/request | {k}: share" for k in inst) + " |",
                  "|---|" + "---:|---:|" * len(inst)]
        for p in names:
            cells = []
            for v in inst.values():
                u = v["parts_us"].get(p)
                cells += ["-", "-"] if u is None else [f"{u:.0f}", f"{100 * u / v['thread_cpu_us_per_request']:.0f} %"]
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
        lines.append("| **total (thread CPU; process CPU)** | " + " | ".join(
            f"**{v['thread_cpu_us_per_request']:.0f}** ({v['process_cpu_us_per_request']:.0f}) | 100 %"
            for v in inst.values()) + " |")
    parts_ = res.get("parts")
    if parts_:
        lines += ["", "| in-process, no HTTP (CPU us per batch of 10) | us |", "|---|---:|"]
        for group in parts_.values():
            lines += [f"| {k} | {u:.0f} |" for k, u in group.items()]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--procs", type=int, default=3, help="load generator processes (one connection each)")
    ap.add_argument("--profile", action="store_true", help="also run the service under cProfile")
    ap.add_argument("--out", type=Path, help="write every figure here as JSON")
    ap.add_argument("--kinds", default="raw,echo,memory,redis", help="the ladder's servers, comma-separated")
    ap.add_argument("--ladder-only", action="store_true", help="only the per-request CPU ladder (1)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lw-prof-"))
    redis = Redis(workdir)
    try:
        res: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
                     "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()[0],
                     "command": " ".join(["python", "bench/ingest_profile.py"] + sys.argv[1:])}
        res["ladder"] = ladder(args.kinds.split(","), redis, args.seconds, args.repeats, args.procs, workdir)
        if args.ladder_only:
            print(json.dumps(res["ladder"], indent=1), flush=True)
            if args.out:
                args.out.write_text(json.dumps(res, indent=1) + "\n")
            return 0
        res["parts"] = parts(redis.url)
        print(json.dumps(res["parts"], indent=1), flush=True)
        res["instrumented"] = {k: instrumented(k, redis, args.seconds, workdir) for k in ("memory", "redis")}
        print(json.dumps(res["instrumented"], indent=1), flush=True)
        if args.profile:
            res["profile"] = {k: profile(k, redis, args.seconds, args.procs, workdir) for k in ("memory", "redis")}
            for k, v in res["profile"].items():
                print(k, f"{v['cpu_us_per_request_profiled']:.0f} us/request under cProfile")
                for g, u in v["groups_us"].items():
                    print(f"   {u:8.1f}  {g}")
        print(tables(res), flush=True)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1) + "\n")
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]) if len(sys.argv) > 5 else None)
    else:
        sys.exit(main())
