"""The memory store keeps bounded memory per run: the same downsampling as the Redis store (same
series read back, compared against a real redis-server) and the same retention after the last
write, both set in one place (Settings)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from losswatch.service.settings import Settings
from losswatch.service.stores import series as ser
from losswatch.service.stores.base import open_store
from losswatch.service.stores.memory import MemoryStore
from losswatch.service.stores.redis import RedisStore
from test_redis_store import NARROW, assert_same_series, cols_of, curve, pipe


def run(coro):
    return asyncio.run(coro)


@pytest.mark.timeout(120)
def test_both_stores_downsample_alike(redis_proc):
    """A run far longer than the raw window, with a NaN, a spike, gaps, a jump of 10^9 steps,
    late steps into raw and downsampled ranges and repeats: both stores count the same and read
    back the same rows (raw and bucket statistics), whole and by range."""
    recs = curve(12_000, seed=4, spike_at=5000, nan_at=3000)
    held = set(range(100, 140)) | {2500, 7001, 11_900}
    for r in recs[9000:]:
        r["step"] += 10**9
    sent = [r for r in recs if r["step"] not in held]
    late = [r for r in recs if r["step"] in held]
    rng = random.Random(5)

    async def go():
        mem = MemoryStore(raw_chunks=2, levels=NARROW)
        red = RedisStore(redis_proc.url, raw_chunks=2, levels=NARROW)
        try:
            i = 0
            while i < len(sent):
                n = rng.choice([1, 7, 100, 500])
                b = sent[i:i + n]
                if i and rng.random() < 0.3:
                    b = b + rng.sample(sent[:i], 3)            # repeats
                a, c = await pipe(mem).ingest("r", cols_of(b)), await pipe(red).ingest("r", cols_of(b))
                assert (a.accepted, a.duplicates, a.out_of_order) == (c.accepted, c.duplicates, c.out_of_order)
                i += n
            for b in (late, late):                            # late, then the same again: repeats
                a, c = await pipe(mem).ingest("r", cols_of(b)), await pipe(red).ingest("r", cols_of(b))
                assert (a.accepted, a.duplicates, a.out_of_order) == (c.accepted, c.duplicates, c.out_of_order)
            whole = await mem.read_series("r")
            assert any(e and "ds_width" in e for e in whole.extra), "nothing was downsampled"
            assert_same_series(whole, await red.read_series("r"))
            for lo, hi in ((0, 4000), (2400, 2600), (8000, 10**9 + 9500), (10**9 + 11_000, None)):
                assert_same_series(await mem.read_series("r", lo, hi), await red.read_series("r", lo, hi))
            sm, sr = await mem.get_run("r"), await red.get_run("r")
            assert (sm.n_steps, sm.duplicates, sm.out_of_order, sm.last_step) == \
                   (sr.n_steps, sr.duplicates, sr.out_of_order, sr.last_step) == \
                   (len(recs), sm.duplicates, sm.out_of_order, recs[-1]["step"])
        finally:
            await red.close()

    run(go())


def test_memory_per_run_stays_bounded_on_a_long_run():
    """Twice as many steps, the same number of stored rows and buckets (the last level grows by
    one bucket per 131,072 steps); before, every step stayed as a row forever (~192 B a step)."""
    def sizes(n: int) -> tuple[int, int, int, int]:
        async def go():
            st = MemoryStore()
            for i in range(0, n, 5000):
                await pipe(st).ingest("long", cols_of([{"step": s, "loss": 1.0, "grad_norm": 1.0, "lr": 1e-3}
                                                  for s in range(i, i + 5000)]))
            r = st._runs[("default", "long")].series[1]   # its first (only) attempt
            assert (await st.get_run("long")).n_steps == n
            return len(r.raw.step), len(r.tiers[0]), len(r.tiers[1]), len(r.tiers[2])
        return run(go())

    raw1, d1a, d2a, d3a = sizes(300_000)
    raw2, d1b, d2b, d3b = sizes(600_000)
    assert raw1 <= Settings.raw_chunks * ser.CHUNK and raw2 <= Settings.raw_chunks * ser.CHUNK
    L1, L2, L3 = ser.LEVELS
    assert d1a <= L1.keep + ser.CHUNK // L1.width and d1b <= L1.keep + ser.CHUNK // L1.width
    assert d2a <= L2.keep + L3.width // L2.width and d2b <= L2.keep + L3.width // L2.width
    assert d3b - d3a <= 300_000 // L3.width + 1


def test_runs_expire_after_the_retention_set_in_settings():
    """A run lives LOSSWATCH_RETENTION_SECONDS after its last write (ingest or metadata), as on
    Redis; its alerts go with it; 0 keeps runs forever."""
    settings = Settings.from_env({"LOSSWATCH_RETENTION_SECONDS": "100", "LOSSWATCH_RAW_CHUNKS": "3"})
    st = open_store(settings)
    assert isinstance(st, MemoryStore) and (st.retention, st.raw_chunks) == (100, 3)
    t0 = time.time()        # reads expire by the wall clock: later writes are "in the future"
    hot = curve(400, diverge_at=300)

    async def go():
        await pipe(st).ingest("old", cols_of(hot), now=t0)
        assert await st.list_alerts(run_id="old")
        await pipe(st).ingest("kept", cols_of(curve(10)), now=t0)
        await pipe(st).put_meta("kept", {"model": "m"}, now=t0 + 50)        # a write: lives longer
        await pipe(st).ingest("new", cols_of(curve(10)), now=t0 + 120)     # past old's retention
        assert await st.get_run("old") is None and await st.read_series("old") is None
        assert await st.list_alerts(run_id="old") == [] and not [
            a for a in await st.list_alerts() if a["id"].startswith("old:")]
        assert [s.run_id for s in await st.list_runs()] == ["kept", "new"]
        await pipe(st).ingest("new", cols_of(curve(20)[10:]), now=t0 + 151)
        assert [s.run_id for s in await st.list_runs()] == ["new"]

    run(go())

    forever = MemoryStore(retention_seconds=0)

    async def keep():
        await pipe(forever).ingest("a", cols_of(curve(5)), now=0.0)
        await pipe(forever).ingest("b", cols_of(curve(5)), now=10.0**9)
        assert [s.run_id for s in await forever.list_runs()] == ["a", "b"]

    run(keep())
