"""Load benchmark of the service on Redis.

``fleet``: N concurrent runs (10,000 by default), each logging one step per second and sending
what it logged every ``--flush`` seconds (the client's batching by time), for ``--duration``
seconds, against two ``losswatch serve --store redis://`` processes and one redis-server, all
started here on loopback. Run i goes to replica i % 2 (the real client keeps its HTTP connection
alive, so an L4 balancer keeps a run on one replica); each replica is reached through a pool of
``--conns`` keep-alive connections (a proxy's pool: 10,000 sockets idle 5 s would only measure
reconnects). A failed or 503 batch is kept and resent with the next one, as the client does.
Afterwards the steps are counted in Redis itself (BITCOUNT of every chunk's presence bitmap) and
compared with what the runs logged. Reported: p50/p99/max ingest latency (request written ->
response read), the lag of flushes behind schedule, CPU seconds of the services and of Redis per
1,000 steps, and steps lost.

``--honour-hint``: each run waits as the real client does when an answer carries the service's flush
hint (``X-Losswatch-Flush-Interval``: at its own phase of the hinted interval, never sooner than
``--flush``).

``throughput``: one service process, batches of 1,000 records from ``--writers`` concurrent runs
(one connection each) for ``--duration`` seconds, memory store vs Redis store: steps/s.

    nice -n 10 .venv/bin/python bench/load.py fleet --runs 10000 --duration 60 --flush 5
    nice -n 10 .venv/bin/python bench/load.py throughput --duration 15
    nice -n 10 .venv/bin/python bench/load.py metrics --runs 10000     # GET /metrics over N runs

Prints a markdown report (copied into bench/results/redis.md).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.redis_proc import RedisServer  # noqa: E402
from fixtures.service_proc import ServiceProc  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


# --- processes ----------------------------------------------------------------------------------

def Service(store: str) -> ServiceProc:  # noqa: N802 - reads as a constructor
    """``losswatch serve`` on ``store`` in a subprocess (the tests' fixture process)."""
    return ServiceProc(env={"LOSSWATCH_STORE": store, "LOSSWATCH_MAX_BATCH_RECORDS": "10000"}, timeout=60)


def cpu_seconds(pid: int) -> float:
    """user+sys CPU of a process and its descendants, from /proc."""
    total = 0.0
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            s = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        stats[int(d)] = f
        children.setdefault(int(f[1]), []).append(int(d))
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += (int(stats[p][11]) + int(stats[p][12])) / TICK
        todo += children.get(p, [])
    return total


# --- a minimal keep-alive HTTP/1.1 client (the load generator must stay cheap) ------------------

class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None
        self.flush_hint = 0.0   # the last answer's X-Losswatch-Flush-Interval (0: none)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):
            if self.w is None:
                self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                self.w.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: l\r\nContent-Type: "
                             b"application/json\r\nContent-Length: " + str(len(body)).encode() +
                             b"\r\n\r\n" + body)
                line = await self.r.readline()
                if not line:
                    raise ConnectionResetError("closed")
                status = int(line.split()[1])
                length = 0
                self.flush_hint = 0.0
                while True:
                    h = await self.r.readline()
                    if h in (b"\r\n", b""):
                        break
                    k, _, v = h.partition(b":")
                    if k.lower() == b"content-length":
                        length = int(v)
                    elif k.lower() == b"x-losswatch-flush-interval":
                        self.flush_hint = float(v)
                return status, await self.r.readexactly(length)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                self.w.close()
                self.w = None
                if attempt:
                    raise
        raise AssertionError


class Pool:
    def __init__(self, port: int, n: int) -> None:
        self.q: asyncio.Queue[Conn] = asyncio.Queue()
        for _ in range(n):
            self.q.put_nowait(Conn(port))

    async def post(self, path: str, body: bytes) -> tuple[int, bytes, float, float]:
        """(status, body, seconds, the answer's flush hint)"""
        c = await self.q.get()
        try:
            t = time.perf_counter()
            st, b = await c.post(path, body)
            return st, b, time.perf_counter() - t, c.flush_hint
        finally:
            self.q.put_nowait(c)


def record(run: int, step: int, t: float, scale: float, nan_at: int | None) -> dict:
    loss = scale * (2.0 * math.exp(-step / 30) + 0.5) * (1 + 0.02 * math.sin(step * 1.7 + run))
    if nan_at is not None and step >= nan_at:
        loss = "NaN"
    return {"step": step, "loss": loss, "grad_norm": 1.0 + 0.1 * math.sin(step + run), "lr": 3e-4, "ts": t}


# --- fleet ---------------------------------------------------------------------------------------

async def fleet(ports: list[int], runs: int, duration: float, flush: float, conns: int,
                honour_hint: bool = False) -> dict:
    pools = [Pool(p, conns) for p in ports]
    lat: list[float] = []
    lag: list[float] = []
    waits: list[float] = []   # the wait before each run's next flush
    codes: dict[int, int] = {}
    accepted = 0
    logged = [0] * runs
    sent = [0] * runs
    rng = random.Random(0)
    t0 = time.time()
    start = [t0 + rng.uniform(0, flush) for _ in range(runs)]
    scale = [rng.uniform(0.5, 2.0) for _ in range(runs)]
    nan_at = [rng.randint(10, 50) if rng.random() < 0.01 else None for _ in range(runs)]
    stop_at = t0 + duration

    async def one(i: int) -> None:
        nonlocal accepted
        pool = pools[i % len(pools)]
        path = f"/v1/runs/load-{i}/steps"
        due = start[i] + flush
        final = False
        hint = 0.0
        phase = random.Random(i).random()
        while True:
            await asyncio.sleep(max(0.0, due - time.time()))
            now = time.time()
            if now >= stop_at:
                now, final = stop_at, True
            logged[i] = max(logged[i], int(now - start[i]) + 1)   # one step a second since start
            if logged[i] > sent[i]:
                recs = [record(i, s, start[i] + s, scale[i], nan_at[i]) for s in range(sent[i], logged[i])]
                lag.append(time.time() - due)
                try:
                    st, body, dt, hint = await pool.post(path, orjson.dumps({"records": recs}))
                except OSError:
                    st, body, dt = 599, b"", 0.0
                codes[st] = codes.get(st, 0) + 1
                if st == 200:
                    lat.append(dt)
                    accepted += orjson.loads(body)["accepted"]
                    sent[i] = logged[i]
            if final and (sent[i] >= logged[i] or time.time() > stop_at + 600):
                return
            if final:
                due += 1.0
            elif honour_hint and hint > flush:
                # as the client does: hinted, a run sends at its own phase of the hinted interval
                now = time.time()
                wait = max(flush, hint * (1.0 - (now / hint + phase) % 1.0))
                waits.append(wait)
                due = now + wait
            else:
                waits.append(flush)
                due += flush

    await asyncio.gather(*(one(i) for i in range(runs)))
    return {"lat": lat, "lag": lag, "waits": waits, "codes": codes, "accepted": accepted, "logged": sum(logged),
            "acked": list(sent), "logged_per_run": list(logged)}


def missing_acked(srv: RedisServer, acked: list[int]) -> int:
    """Acknowledged steps (run i: steps 0 .. acked[i]-1) whose presence bit is not set in Redis."""
    import numpy as np

    from losswatch.service.stores import series as ser

    cli = srv.client()
    missing = 0
    for lo in range(0, len(acked), 1000):
        p = cli.pipeline(transaction=False)
        want = []
        for i in range(lo, min(lo + 1000, len(acked))):
            for ci in range((acked[i] + ser.CHUNK - 1) // ser.CHUNK):
                p.getrange(f"lw:{{default/load-{i}}}:raw:{ci}", 0, ser.PRESENCE_BYTES - 1)
                want.append(min(ser.CHUNK, acked[i] - ci * ser.CHUNK))
        for bm, n in zip(p.execute(), want):
            bits = np.unpackbits(np.frombuffer(bm.ljust(ser.PRESENCE_BYTES, b"\0"), dtype=np.uint8),
                                 bitorder="big")
            missing += int(n - bits[:n].sum())
    return missing


def count_in_redis(srv: RedisServer) -> tuple[int, int]:
    """(steps found by BITCOUNT of every raw chunk's presence bitmap, sum of runs' n_steps)."""
    from losswatch.service.stores import series as ser

    cli = srv.client()
    keys = list(cli.scan_iter(match="lw:{*}:raw:*", count=5000))
    bits = 0
    for lo in range(0, len(keys), 2000):
        p = cli.pipeline(transaction=False)
        for k in keys[lo:lo + 2000]:
            p.bitcount(k, 0, ser.PRESENCE_BYTES - 1)
        bits += sum(p.execute())
    states = list(cli.scan_iter(match="lw:{*}:s", count=5000))
    n = 0
    for lo in range(0, len(states), 2000):
        p = cli.pipeline(transaction=False)
        for k in states[lo:lo + 2000]:
            p.hget(k, "n_steps")
        n += sum(int(x or 0) for x in p.execute())
    return bits, n


def metrics_scrape(port: int) -> tuple[float, int]:
    """(seconds, runs exported) of one GET /metrics, median of 3."""
    import http.client

    times = []
    runs = 0
    for _ in range(3):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t = time.perf_counter()
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
        times.append(time.perf_counter() - t)
        runs = sum(1 for line in body.splitlines() if line.startswith("losswatch_run_step{"))
    return sorted(times)[1], runs


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_fleet(a) -> None:
    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d) / "redis", appendonly=a.aof != "no",
                          appendfsync=a.aof if a.aof != "no" else "everysec").start()
        svcs = []
        try:
            svcs = [Service(srv.url) for _ in range(2)]
            pids = [s.proc.pid for s in svcs]
            cpu0 = [cpu_seconds(p) for p in pids] + [cpu_seconds(srv.proc.pid)]
            gen0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            try:
                import uvloop

                uvloop.install()
            except ImportError:
                pass
            res = asyncio.run(fleet([s.port for s in svcs], a.runs, a.duration, a.flush, a.conns,
                                    a.honour_hint))
            wall = time.perf_counter() - t0
            cpu1 = [cpu_seconds(p) for p in pids] + [cpu_seconds(srv.proc.pid)]
            gen1 = resource.getrusage(resource.RUSAGE_SELF)
            scrape = metrics_scrape(svcs[0].port)
            bits, n_steps = count_in_redis(srv)
            missing = missing_acked(srv, res["acked"])
            mem = srv.client().info("memory")["used_memory"]
        finally:
            for s in svcs:
                s.stop()
            srv.stop()
    svc_cpu = sum(cpu1[:2]) - sum(cpu0[:2])
    red_cpu = cpu1[2] - cpu0[2]
    gen_cpu = (gen1.ru_utime + gen1.ru_stime) - (gen0.ru_utime + gen0.ru_stime)
    steps = res["accepted"]
    n_req = sum(res["codes"].values())
    print(f"### Fleet: {a.runs:,} runs x 1 step/s, flush every {a.flush:g} s, {a.duration:g} s, "
          f"2 service processes + 1 Redis (appendonly {a.aof})"
          f"{'; the runs follow the flush hint' if a.honour_hint else ''}\n")
    print("| figure | value |\n|---|---:|")
    rows = [
        ("steps logged by the runs", f"{res['logged']:,}"),
        ("steps acknowledged (sum of `accepted`)", f"{steps:,}"),
        ("steps found in Redis (BITCOUNT of presence bitmaps)", f"{bits:,}"),
        ("sum of runs' n_steps", f"{n_steps:,}"),
        ("acknowledged steps missing in Redis (lost)", f"{missing:,}"),
        ("steps still held by the clients at the end (never acknowledged)",
         f"{res['logged'] - sum(res['acked']):,}"),
        ("requests (by status)", ", ".join(f"{k}: {v:,}" for k, v in sorted(res["codes"].items()))),
        ("wall time incl. final flush", f"{wall:.1f} s"),
        ("offered load", f"{a.runs:,} steps/s in {a.runs / a.flush:,.0f} requests/s"),
        ("achieved (over the wall time incl. ramp-up and final flush)",
         f"{steps / wall:,.0f} steps/s, {n_req / wall:,.0f} requests/s"),
        ("ingest latency p50 / p99 / max", f"{pct(res['lat'], .5) * 1e3:.1f} / {pct(res['lat'], .99) * 1e3:.1f} / "
                                           f"{max(res['lat']) * 1e3:.1f} ms"),
        ("wait between a run's flushes: mean / max", f"{sum(res['waits']) / max(1, len(res['waits'])):.1f} / "
                                                      f"{max(res['waits'], default=0):.1f} s"),
        ("flush lag behind schedule p50 / p99", f"{pct(res['lag'], .5) * 1e3:.0f} / {pct(res['lag'], .99) * 1e3:.0f} ms"),
        ("CPU, 2 service processes", f"{svc_cpu:.1f} s = {svc_cpu / steps * 1000 * 1e3:.1f} ms per 1,000 steps"),
        ("CPU, redis-server", f"{red_cpu:.1f} s = {red_cpu / steps * 1000 * 1e3:.1f} ms per 1,000 steps"),
        ("CPU, load generator (not counted above)", f"{gen_cpu:.1f} s"),
        ("Redis used_memory after", f"{mem / 2**20:.1f} MiB ({mem / a.runs / 1024:.1f} KiB per run)"),
        ("GET /metrics afterwards (per-run gauges read from Redis)",
         f"{scrape[0] * 1e3:.0f} ms, {scrape[1]:,} runs exported"),
    ]
    for k, v in rows:
        print(f"| {k} | {v} |")


# --- throughput ----------------------------------------------------------------------------------

async def throughput(port: int, writers: int, duration: float) -> tuple[int, float, list[float]]:
    lat: list[float] = []
    total = 0
    stop = time.perf_counter() + duration

    async def w(k: int) -> None:
        nonlocal total
        c = Conn(port)
        step = 0
        while time.perf_counter() < stop:
            recs = [record(k, s, 1.7e9 + s, 1.0, None) for s in range(step, step + 1000)]
            t = time.perf_counter()
            st, body = await c.post(f"/v1/runs/tp-{k}/steps", orjson.dumps({"records": recs}))
            lat.append(time.perf_counter() - t)
            assert st == 200, body[:200]
            total += orjson.loads(body)["accepted"]
            step += 1000

    t0 = time.perf_counter()
    await asyncio.gather(*(w(k) for k in range(writers)))
    return total, time.perf_counter() - t0, lat


def run_throughput(a) -> None:
    print(f"### Single service process, batches of 1,000 records, {a.writers} concurrent runs, "
          f"{a.duration:g} s\n")
    print("| store | steps/s | batch latency p50 / p99 | service CPU per 1,000 steps | Redis CPU per 1,000 steps |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d) / "redis").start()
        try:
            for store in ("memory://", srv.url):
                svc = Service(store)
                try:
                    c0, r0 = cpu_seconds(svc.proc.pid), cpu_seconds(srv.proc.pid)
                    n, el, lat = asyncio.run(throughput(svc.port, a.writers, a.duration))
                    c1, r1 = cpu_seconds(svc.proc.pid), cpu_seconds(srv.proc.pid)
                finally:
                    svc.stop()
                red = f"{(r1 - r0) / n * 1e6:.1f} ms" if store != "memory://" else "-"
                print(f"| {store.split(':')[0]} | {n / el:,.0f} | {pct(lat, .5) * 1e3:.0f} / "
                      f"{pct(lat, .99) * 1e3:.0f} ms | {(c1 - c0) / n * 1e6:.1f} ms | {red} |")
        finally:
            srv.stop()


def run_metrics(a) -> None:
    """GET /metrics with N runs in Redis (written straight through the store, 5 steps each)."""
    from losswatch.service.pipeline import IngestPipeline
    from losswatch.service.stores.base import Columns
    from losswatch.service.stores.redis import RedisStore

    async def fill(url: str) -> float:
        st = RedisStore(url)
        writer = IngestPipeline(st)
        for lo in range(0, a.runs, 200):
            await asyncio.gather(*(writer.ingest(f"m-{i}", Columns(
                step=list(range(5)), loss=[1.0, 0.9, 0.8, 0.7, 0.6], grad_norm=[1.0] * 5, lr=[1e-3] * 5,
                val_loss=[None] * 5, ts=[None] * 5, extra=[None] * 5)) for i in range(lo, min(lo + 200, a.runs))))
        t = time.process_time()
        runs = await st.list_runs(active_since=time.time() - 900)
        cpu = time.process_time() - t
        assert len(runs) == a.runs
        await st.close()
        return cpu

    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d) / "redis").start()
        try:
            cpu = asyncio.run(fill(srv.url))
            svc = Service(srv.url)
            try:
                el, n = metrics_scrape(svc.port)
            finally:
                svc.stop()
        finally:
            srv.stop()
    print(f"GET /metrics with {a.runs:,} runs in Redis: {el * 1e3:.0f} ms (median of 3), {n:,} runs "
          f"exported; the store's list_runs alone: {cpu * 1e3:.0f} ms CPU")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fleet")
    f.add_argument("--runs", type=int, default=10_000)
    f.add_argument("--duration", type=float, default=60.0)
    f.add_argument("--flush", type=float, default=5.0)
    f.add_argument("--conns", type=int, default=64, help="keep-alive connections per replica")
    f.add_argument("--aof", default="everysec", choices=["no", "everysec", "always"])
    f.add_argument("--honour-hint", action="store_true",
                   help="runs wait as long as the service's flush hint asks (the client's rule)")
    t = sub.add_parser("throughput")
    t.add_argument("--writers", type=int, default=4)
    t.add_argument("--duration", type=float, default=15.0)
    m = sub.add_parser("metrics")
    m.add_argument("--runs", type=int, default=10_000)
    a = ap.parse_args()
    print(f"(machine: {os.cpu_count()} CPUs shared with other work; load average at start "
          f"{os.getloadavg()[0]:.1f})\n")
    {"fleet": run_fleet, "throughput": run_throughput, "metrics": run_metrics}[a.mode](a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
