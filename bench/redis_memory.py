"""Redis memory per run: one long run (1,000,000 steps by default) through the Redis store.

Starts its own redis-server (no persistence) on a free port, ingests a realistic run in batches of
1,000 (real detectors), and at checkpoints reports Redis' used_memory growth and MEMORY USAGE of
the run's keys by kind (raw chunks, downsampled levels, state, alerts...). Also a fleet of short
runs (memory per run when there are many of them).

    nice -n 10 .venv/bin/python bench/redis_memory.py [--steps 1000000] [--short-runs 2000]

Prints a markdown report (copied into bench/results/redis.md).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.redis_proc import RedisServer  # noqa: E402
from losswatch.service.pipeline import IngestPipeline  # noqa: E402
from losswatch.service.stores.base import Columns  # noqa: E402
from losswatch.service.stores.redis import RedisStore  # noqa: E402


def batch(lo: int, hi: int, rng: random.Random) -> Columns:
    steps = list(range(lo, hi))
    loss = [2.0 * math.exp(-s / 50_000) + 0.3 + rng.gauss(0, 0.02) for s in steps]
    lr = [3e-4 * 0.5 * (1 + math.cos(math.pi * s / 1_000_000)) for s in steps]
    return Columns(step=steps, loss=loss, grad_norm=[1.0 + rng.gauss(0, 0.05) for _ in steps], lr=lr,
                   val_loss=[loss[i] if s % 1000 == 0 else None for i, s in enumerate(steps)],
                   ts=[1.7e9 + s * 0.1 for s in steps], extra=[None] * len(steps))


def kind_of(key: bytes) -> str:
    k = key.decode().split("}:", 1)[1]
    return "raw chunks" if k.startswith("raw:") else {"d1": "level 1 (64 steps/point)",
                                                       "d2": "level 2 (2,048 steps/point)",
                                                       "d3": "level 3 (131,072 steps/point)",
                                                       "s": "state (detectors, summary)",
                                                       "rc": "raw chunk index"}.get(k, "other")


def run_keys(cli, run_id: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for key in cli.scan_iter(match=f"lw:{{default/{run_id}}}:*", count=1000):
        out[kind_of(key)] += cli.memory_usage(key, samples=0) or 0
    return dict(out)


async def long_run(srv: RedisServer, n: int) -> list[str]:
    cli = srv.client()
    st = RedisStore(srv.url, retention_seconds=0)
    writer = IngestPipeline(st)
    rng = random.Random(0)
    base = cli.info("memory")["used_memory"]
    checkpoints = sorted({c for c in (10_000, 100_000, 300_000, n) if c <= n})
    lines = ["| steps | used_memory growth | keys of the run (MEMORY USAGE) | by kind | bytes/step |",
             "|---:|---:|---:|---|---:|"]
    t0 = time.perf_counter()
    done = 0
    for c in checkpoints:
        while done < c:
            hi = min(done + 1000, c)
            await writer.ingest("long", batch(done, hi, rng))
            done = hi
        used = cli.info("memory")["used_memory"] - base
        kinds = run_keys(cli, "long")
        total = sum(kinds.values())
        by = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {c:,} | {used / 2**20:.2f} MiB | {total / 2**20:.2f} MiB | {by} | {total / c:.2f} |")
    el = time.perf_counter() - t0
    s = await st.read_series("long")
    lines.append("")
    lines.append(f"Ingest of {n:,} steps in batches of 1,000 through the store (real detectors): "
                 f"{el:.1f} s ({n / el:,.0f} steps/s). A full read of the run returns {len(s):,} "
                 f"points. Without downsampling the packed raw steps alone would take "
                 f"{n * 40 / 2**20:.0f} MiB; one stream entry per step (~53 B) {n * 53 / 2**20:.0f} MiB.")
    await st.close()
    return lines


async def short_runs(srv: RedisServer, runs: int, steps: int) -> list[str]:
    cli = srv.client()
    st = RedisStore(srv.url, retention_seconds=0)
    writer = IngestPipeline(st)
    rng = random.Random(1)
    base = cli.info("memory")["used_memory"]
    for lo in range(0, runs, 200):
        await asyncio.gather(*(writer.ingest(f"short-{i}", batch(0, steps, rng)) for i in range(lo, min(lo + 200, runs))))
    used = cli.info("memory")["used_memory"] - base
    kinds = run_keys(cli, "short-7")
    await st.close()
    return [f"{runs:,} runs of {steps} steps: used_memory grew {used / 2**20:.1f} MiB = "
            f"{used / runs / 1024:.1f} KiB per run (one run's keys: "
            + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
            + ")."]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--short-runs", type=int, default=2000)
    ap.add_argument("--short-steps", type=int, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d)).start()
        try:
            lines = asyncio.run(long_run(srv, a.steps))
            srv.client().flushall()
            lines += ["", *asyncio.run(short_runs(srv, a.short_runs, a.short_steps))]
            v = srv.client().info("server")["redis_version"]
        finally:
            srv.stop()
    print(f"### Redis memory per run (redis-server {v}, default levels, 8 raw chunks)\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
