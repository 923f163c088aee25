"""Many concurrent runs through the real client: latency, loss and server CPU on Redis.

``--runs`` real :class:`losswatch.client.Monitor` objects (the client's own code path: its
background sender thread per run, its default ``flush_interval`` and batching, its retries and
spool), each given one step a second for ``--duration`` seconds, then closed. They live in
``--procs`` client processes (each one driver thread that calls ``log()`` on its runs at their
second, staggered, plus the runs' own sender threads), against one ``losswatch serve --store
redis://`` process (one uvicorn worker) and one redis-server (appendonly everysec; `--aof`), all started
here on loopback ports.

Reported:
* ingest latency of POST /steps as the client sees it (request written -> answer read, timed
  around the client's ``client.http.Connection.request``; it includes waiting for the client process's GIL)
  and as the server's own ``losswatch_ingest_latency_seconds`` histogram has it (bucket bounds),
  over the whole run, over its first 5 s (from the first request, before any hint, to 5 s into
  the logging), over the steady part (``--settle`` seconds into the logging to its end) and over
  the close (every run closed at once); the metadata PUTs' count and latency beside them;
* the steps logged, acknowledged, and found in Redis (every run read back through the store's
  ``read_series``: each logged step must be there exactly once);
* CPU seconds of the service process and of redis-server per 1,000 steps (from /proc);
* the runs' flush interval over time (it moves only if the service hints: docs/service-api.md).

``--no-hint`` runs the service with the flush hint off, ``--hint-inflight N`` with its threshold at
N; ``--raw FILE`` keeps every POST's and PUT's (time from the start of logging, latency, status) for a closer look.

    .venv/bin/python bench/concurrent_runs.py --runs 1000 --duration 90
    .venv/bin/python bench/concurrent_runs.py --runs 1000 --duration 90 --no-hint

Prints a markdown report (copied into bench/results/load.md).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from fixtures.redis_proc import RedisServer  # noqa: E402
from fixtures.service_proc import ServiceProc  # noqa: E402
from load import cpu_seconds, pct  # noqa: E402

RUN_PREFIX = "cr-"


# --- one client process ---------------------------------------------------------------------------

def client_main(a) -> None:
    """``--first .. --first+--count-1`` runs in this process; writes a JSON result to ``--out``."""
    from losswatch.client import Monitor
    from losswatch.client import http as http_mod

    logging.getLogger("losswatch").setLevel(logging.WARNING)  # no start line per run
    posts: list[tuple[float, float, int]] = []    # POST /steps: (monotonic start, seconds, status)
    puts: list[tuple[float, float, int]] = []     # PUT (the run's metadata): the same
    refusals: dict[str, int] = {}                 # why the service answered 5xx: its detail, shortened
    plain_request = http_mod.Connection.request

    def timed_request(self, method, path, body=None):
        t, t_mono = time.perf_counter(), time.monotonic()
        status = 599
        try:
            reply = plain_request(self, method, path, body)
            status = reply.status
            if status >= 500:
                why = refusal_reason(reply.body)
                refusals[why] = refusals.get(why, 0) + 1
            return reply
        finally:
            if method == "POST" and path.split("?")[0].endswith("/steps"):
                posts.append((t_mono, time.perf_counter() - t, status))
            elif method == "PUT":
                puts.append((t_mono, time.perf_counter() - t, status))

    http_mod.Connection.request = timed_request   # the bench's stopwatch around the real request

    t_start = time.monotonic()
    ids = [f"{RUN_PREFIX}{i}" for i in range(a.first, a.first + a.count)]
    # the defaults (flush_interval, batch_size...) but the spool's place, where close() leaves
    # what it could not send (counted by the parent)
    mons = [Monitor(run_id=r, url=a.url, spool_dir=str(Path(a.spool) / r)) for r in ids]
    logged = [0] * len(mons)
    intervals: list[tuple[float, float, float]] = []        # (t, mean, max) of the runs' intervals
    # run k logs its steps at start + k/count + s (staggered over the first second)
    t0 = time.monotonic() + 1.0
    due = [(t0 + k / len(mons), k) for k in range(len(mons))]
    heapq.heapify(due)
    stop = t0 + a.duration
    next_sample = t0
    while due:
        t, k = due[0]
        if t >= stop:
            break
        now = time.monotonic()
        if now >= next_sample:
            iv = [m._worker.interval for m in mons]
            intervals.append((now - t_start, sum(iv) / len(iv), max(iv)))
            next_sample += 1.0
        if t > now:
            time.sleep(min(t - now, max(0.0, next_sample - now)))
            continue
        heapq.heapreplace(due, (t + 1.0, k))
        s = logged[k]
        mons[k].log(s, loss=2.0 * (0.99 ** s) + 0.1, grad_norm=1.0, lr=3e-4)
        logged[k] = s + 1
    # close all at once (each flushes what it holds, at most its exit_timeout)
    closers = [threading.Thread(target=m.close) for m in mons]
    for c in closers:
        c.start()
    for c in closers:
        c.join()
    # times from the start of logging (t0): negative while the runs were being created
    res = {"runs": ids, "logged": logged, "sent": [m._transport.stats["sent"] for m in mons],
           "spooled": [len(m._worker.spool) for m in mons],
           "posts": [(t - t0, s, st) for t, s, st in posts], "puts": [(t - t0, s, st) for t, s, st in puts],
           "intervals": [(t - (t0 - t_start), mean, mx) for t, mean, mx in intervals],
           "refusals": refusals, "cpu": time.process_time()}
    Path(a.out).write_text(json.dumps(res))


def refusal_reason(body: bytes) -> str:
    """What a 5xx answer said, without its addresses and figures (so answers group by reason)."""
    try:
        detail = str(json.loads(body).get("detail", ""))
    except (ValueError, AttributeError):
        detail = body[:80].decode(errors="replace")
    for known in ("no free connection in time", "did not answer within", "unreachable", "busy", "conflict"):
        if known in detail:
            return known
    return detail[:60]


# --- the parent: processes, counting ---------------------------------------------------------------

def histogram(url: str) -> dict[float, float]:
    """losswatch_ingest_latency_seconds buckets (le -> cumulative count) from /metrics."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request("GET", "/metrics")
    out: dict[float, float] = {}
    for line in c.getresponse().read().decode().splitlines():
        if line.startswith("losswatch_ingest_latency_seconds_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            out[float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def hist_pct(h0: dict[float, float], h1: dict[float, float], q: float) -> str:
    """The bucket bound under which a fraction q of the requests between two scrapes fell."""
    d = sorted((le, h1[le] - h0.get(le, 0.0)) for le in h1)
    total = d[-1][1] if d else 0
    for le, n in d:
        if total and n >= q * total:
            return "<= " + ("inf" if le == float("inf") else f"{le * 1e3:g} ms")
    return "-"


def count_in_redis(url: str, runs: list[str], logged: list[int]) -> tuple[int, int, int]:
    """(steps read back through the store, logged steps missing, extra or repeated steps)."""
    from losswatch.service.stores.redis import RedisStore

    async def go() -> tuple[int, int, int]:
        st = RedisStore(url)
        found = missing = extra = 0
        try:
            for lo in range(0, len(runs), 100):
                got = await asyncio.gather(*(st.read_series(r) for r in runs[lo:lo + 100]))
                for cols, n in zip(got, logged[lo:lo + 100]):
                    steps = cols.step if cols is not None else []
                    found += len(steps)
                    missing += len(set(range(n)) - set(steps))
                    extra += len(steps) - len(set(steps) & set(range(n)))
        finally:
            await st.close()
        return found, missing, extra

    return asyncio.run(go())


def _count(reqs: list) -> dict[int, int]:
    out: dict[int, int] = {}
    for _, _, st in reqs:
        out[st] = out.get(st, 0) + 1
    return out


def main_bench(a) -> None:
    print(f"(machine: {os.cpu_count()} CPUs shared with other work; `uptime` at start: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()})\n")
    env = {}
    if a.no_hint or a.hint_inflight is not None:
        env["LOSSWATCH_FLUSH_HINT_INFLIGHT"] = "0" if a.no_hint else str(a.hint_inflight)
    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d) / "redis", appendonly=a.aof != "no",
                          appendfsync=a.aof if a.aof != "no" else "everysec").start()
        svc = None
        try:
            env["LOSSWATCH_STORE"] = srv.url
            svc = ServiceProc(env=env, timeout=60)
            h0 = histogram(svc.url)
            c0, r0 = cpu_seconds(svc.proc.pid), cpu_seconds(srv.proc.pid)
            t0 = time.monotonic()
            per = -(-a.runs // a.procs)
            kids = []
            for p in range(a.procs):
                first, count = p * per, min(per, a.runs - p * per)
                if count <= 0:
                    break
                out = Path(d) / f"client-{p}.json"
                kids.append((out, subprocess.Popen(
                    [sys.executable, __file__, "_client", "--url", svc.url, "--first", str(first),
                     "--count", str(count), "--duration", str(a.duration), "--out", str(out),
                     "--spool", str(Path(d) / "spool")])))
            for _, k in kids:
                if k.wait() != 0:
                    raise SystemExit(f"a client process exited with {k.returncode}")
            wall = time.monotonic() - t0
            c1, r1 = cpu_seconds(svc.proc.pid), cpu_seconds(srv.proc.pid)
            h1 = histogram(svc.url)
            res = [json.loads(out.read_text()) for out, _ in kids]
            runs = [r for x in res for r in x["runs"]]
            logged = [n for x in res for n in x["logged"]]
            found, missing, extra = count_in_redis(srv.url, runs, logged)
            # Redis holds writes back while a slow disk has not finished the last fsync: say so
            slow_fsyncs = srv.log_tail(10**7).count("fsync is taking too long")
            spilled = sum(len(f.read_text().splitlines()) for f in Path(d, "spool").glob("*/unsent-*.jsonl"))
        finally:
            if svc is not None:
                svc.stop()
            srv.stop()
    posts = [p for x in res for p in x["posts"]]
    puts = [p for x in res for p in x["puts"]]
    if a.raw:   # every POST and PUT (t, seconds, status) and the interval samples, for a closer look
        Path(a.raw).write_text(json.dumps({"posts": posts, "puts": puts,
                                           "intervals": [x["intervals"] for x in res]}))
    ok = [s for _, s, st in posts if st == 200]
    # windows of the logging's time line (t = 0: the first logged second; close at t = duration)
    first5 = [s for t, s, st in posts if st == 200 and t < 5.0]
    steady = [s for t, s, st in posts if st == 200 and a.settle <= t < a.duration]
    closing = [s for t, s, st in posts if st == 200 and t >= a.duration]
    put_ok = [s for _, s, st in puts if st == 200]
    codes = _count(posts)
    refusals: dict[str, int] = {}
    for x in res:
        for why, n in x.get("refusals", {}).items():
            refusals[why] = refusals.get(why, 0) + n
    n_logged = sum(logged)
    n_sent = sum(n for x in res for n in x["sent"])
    spooled = sum(n for x in res for n in x["spooled"])
    ivs: dict[int, list[float]] = {}
    for x in res:
        for t, mean, _mx in x["intervals"]:
            ivs.setdefault(int(t), []).append(mean)
    marks = sorted(ivs)
    shown = [marks[i] for i in range(0, len(marks), max(1, len(marks) // 8))] if marks else []
    svc_cpu, red_cpu = c1 - c0, r1 - r0
    gen_cpu = sum(x["cpu"] for x in res)
    hint = ("off (`LOSSWATCH_FLUSH_HINT_INFLIGHT=0`)" if a.no_hint else "on (the defaults)"
            if a.hint_inflight is None else f"on, `LOSSWATCH_FLUSH_HINT_INFLIGHT={a.hint_inflight}`")
    print(f"### {a.runs:,} runs x 1 step/s through the real client, {a.duration:g} s, 1 service process "
          f"(one uvicorn worker) + 1 Redis (appendonly {a.aof}); flush hint {hint}\n")
    print("| figure | value |\n|---|---:|")
    rows = [
        ("client processes x runs each (one sender thread per run)", f"{len(kids)} x {per}"),
        ("steps logged", f"{n_logged:,}"),
        ("steps acknowledged by the service (the clients' `sent`)", f"{n_sent:,}"),
        ("steps found in Redis (read back through the store)", f"{found:,}"),
        ("logged steps missing in Redis / repeated or unknown", f"{missing:,} / {extra:,}"),
        ("steps not sent by close() (kept in the runs' unsent files) / still in memory",
         f"{spilled:,} / {spooled:,}"),
        ("POST /steps (by status)", ", ".join(f"{k}: {v:,}" for k, v in sorted(codes.items()))),
        ("requests per second (POSTs / wall time) and steps per request",
         f"{len(posts) / wall:,.0f}, {n_sent / max(1, len(ok)):.1f}"),
        ("wall time incl. start-up and close", f"{wall:.1f} s"),
        ("client-side latency p50 / p99 / max, all", f"{pct(ok, .5) * 1e3:.1f} / {pct(ok, .99) * 1e3:.1f} / "
                                                      f"{max(ok, default=float('nan')) * 1e3:.1f} ms"),
        ("client-side latency p50 / p99, first 5 s (POSTs)",
         f"{pct(first5, .5) * 1e3:.1f} / {pct(first5, .99) * 1e3:.1f} ms ({len(first5):,} POSTs)"),
        (f"client-side latency p50 / p99, steady ({a.settle:g} s to the end of logging)",
         f"{pct(steady, .5) * 1e3:.1f} / {pct(steady, .99) * 1e3:.1f} ms"),
        ("client-side latency p50 / p99 / max, the close (all runs at once)",
         f"{pct(closing, .5) * 1e3:.1f} / {pct(closing, .99) * 1e3:.1f} / "
         f"{max(closing, default=float('nan')) * 1e3:.1f} ms ({len(closing):,} POSTs)"),
        ("5xx answers by the service's reason (POSTs and PUTs)",
         ", ".join(f"{k}: {v:,}" for k, v in sorted(refusals.items())) or "none"),
        ("metadata PUTs (by status); latency p50 / p99",
         ", ".join(f"{k}: {v:,}" for k, v in sorted(_count(puts).items()))
         + f"; {pct(put_ok, .5) * 1e3:.1f} / {pct(put_ok, .99) * 1e3:.1f} ms"),
        ("server-side latency (its histogram) p50 / p99", f"{hist_pct(h0, h1, .5)} / {hist_pct(h0, h1, .99)}"),
        ("CPU, service process", f"{svc_cpu:.1f} s = {svc_cpu / max(1, found) * 1e6:.0f} ms per 1,000 steps, "
                                 f"{svc_cpu / max(1, len(posts)) * 1e6:,.0f} us per POST"),
        ("Redis log: \"AOF fsync is taking too long\" (writes held back for a busy disk)", f"{slow_fsyncs:,}"),
        ("CPU, redis-server", f"{red_cpu:.1f} s = {red_cpu / max(1, found) * 1e6:.0f} ms per 1,000 steps"),
        ("CPU, client processes (not counted above)", f"{gen_cpu:.1f} s"),
        ("runs' mean flush interval at t = " + ", ".join(f"{t}" for t in shown) + " s",
         ", ".join(f"{sum(ivs[t]) / len(ivs[t]):.2g}" for t in shown) + " s"),
    ]
    for k, v in rows:
        print(f"| {k} | {v} |")
    print(f"\n(`uptime` at the end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode")
    c = sub.add_parser("_client", help="(internal) one client process")
    c.add_argument("--url", required=True)
    c.add_argument("--first", type=int, required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--spool", required=True)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=90.0)
    ap.add_argument("--procs", type=int, default=4, help="client processes")
    ap.add_argument("--settle", type=float, default=20.0,
                    help="seconds of logging left out of the steady-state latency (start-up, the hint settling)")
    ap.add_argument("--aof", default="everysec", choices=["no", "everysec", "always"])
    ap.add_argument("--raw", help="write every POST's and PUT's (t, seconds, status) to this JSON file")
    ap.add_argument("--hint-inflight", type=int, help="the service's LOSSWATCH_FLUSH_HINT_INFLIGHT")
    ap.add_argument("--no-hint", action="store_true", help="run the service with the flush hint off")
    a = ap.parse_args()
    if a.mode == "_client":
        client_main(a)
    else:
        main_bench(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
