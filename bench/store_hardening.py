"""Cost of the requests a step gap or a stride used to make expensive, and memory of a long run on
the memory store.

Redis part (its own redis-server on a free port, no persistence, the store's default retention
of 30 days so TTL refreshes run): a run of 100 steps, a jump of ``gap`` steps, then 100 steps;
times the batch that crosses the gap, the mean of 5 later batches, the closing metadata PUT and a
read of the whole run. Then a run logged every 256 steps: mean time per 500-record batch.
Memory part: tracemalloc's count of the memory store's live allocations after one run of
``--steps`` steps (batches of 1,000, real detectors).

    nice -n 10 .venv/bin/python bench/store_hardening.py [--gaps 100000000,1000000000000000] \
        [--steps 300000] [--limit 60]

Runs with whichever losswatch the import path gives (run it once with the tree before a change
and once after). An operation past ``--limit`` seconds is reported as not finished.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.redis_proc import RedisServer  # noqa: E402
from losswatch.service.pipeline import IngestPipeline  # noqa: E402
from losswatch.service.stores.base import Columns  # noqa: E402
from losswatch.service.stores.memory import MemoryStore  # noqa: E402
from losswatch.service.stores.redis import RedisStore  # noqa: E402


def batch(steps: list[int]) -> Columns:
    """A healthy run's records: a smooth decay with a little noise (no alert to store)."""
    loss = [2.0 * math.exp(-s / 50_000) + 0.3 + 0.01 * math.sin(s) for s in steps]
    return Columns(step=steps, loss=loss, grad_norm=[1.0] * len(steps), lr=[1e-3] * len(steps),
                   val_loss=[None] * len(steps), ts=[1.7e9 + k for k in range(len(steps))],
                   extra=[None] * len(steps))


async def timed(coro, limit: float) -> str:
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(coro, limit)
    except asyncio.TimeoutError:
        return f"not finished in {limit:.0f} s"
    return f"{(time.perf_counter() - t0) * 1000:.1f} ms"


async def gap_rows(url: str, gap: int, limit: float) -> list[str]:
    st = RedisStore(url, retention_seconds=30 * 86400)
    writer = IngestPipeline(st)
    run_id = f"gap-{gap}"
    try:
        await writer.ingest(run_id, batch(list(range(100))))
        cross = await timed(writer.ingest(run_id, batch([gap + k for k in range(100)])), limit)
        t0 = time.perf_counter()
        later = "-"
        if not cross.startswith("not"):
            for k in range(1, 6):
                await asyncio.wait_for(writer.ingest(run_id, batch([gap + 100 * k + j for j in range(100)])), limit)
            later = f"{(time.perf_counter() - t0) * 1000 / 5:.1f} ms"
        put = await timed(writer.put_meta(run_id, {"status": "finished"}), limit)
        read = await timed(st.read_series(run_id), limit)
    finally:
        await st.close()
    return [f"| {gap:.0e} | {cross} | {later} | {put} | {read} |"]


async def stride_row(url: str, limit: float) -> str:
    st = RedisStore(url, retention_seconds=30 * 86400)
    writer = IngestPipeline(st)
    try:
        steps = list(range(0, 256 * 4000, 256))
        t0 = time.perf_counter()
        for i in range(0, len(steps), 500):
            await asyncio.wait_for(writer.ingest("stride", batch(steps[i:i + 500])), limit)
        per = (time.perf_counter() - t0) * 1000 / (len(steps) // 500)
    finally:
        await st.close()
    return f"| stride 256, 500-record batches (8 of them) | {per:.1f} ms per batch |"


async def memory_row(n: int) -> str:
    await IngestPipeline(MemoryStore()).ingest("warm-up", batch(list(range(10))))   # imports the detectors first
    tracemalloc.start()
    st = MemoryStore()
    writer = IngestPipeline(st)
    base = tracemalloc.get_traced_memory()[0]
    for i in range(0, n, 1000):
        await writer.ingest("long", batch(list(range(i, i + 1000))))
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    alerts = len(await st.list_alerts(run_id="long"))
    return f"| memory store, one run of {n:,} steps ({alerts} alerts) | {used / 1e6:.2f} MB ({used / n:.1f} B/step) |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gaps", default="100000000,1000000000000000")
    ap.add_argument("--steps", type=int, default=300_000)
    ap.add_argument("--limit", type=float, default=60.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d)).start()
        try:
            lines = ["| gap (steps) | batch across the gap | later batches (mean) | metadata PUT | read the run |",
                     "|---|---|---|---|---|"]
            for g in a.gaps.split(","):
                lines += asyncio.run(gap_rows(srv.url, int(g), a.limit))
            lines += ["", "| case | figure |", "|---|---|", asyncio.run(stride_row(srv.url, a.limit))]
        finally:
            srv.kill9()           # a Redis stuck in a script ignores a polite stop
    lines.append(asyncio.run(memory_row(a.steps)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
