"""The Redis store against a real redis-server with extreme step numbers: every step up to 2^63-1
is stored under an exact key and read back, and the work of a write or a read is bounded by the
records stored, never by the width of a gap between steps (a script that counts through a gap
of 10^15 chunks blocks every client of that Redis). Work is counted in Redis' own command
statistics, which include the commands scripts run; every test ends by checking that Redis still
answers PING within a second."""

from __future__ import annotations

import asyncio
import re

import pytest

from losswatch.service.stores import series as ser
from losswatch.service.stores.redis import RedisStore
from test_redis_store import NARROW, cols_of, curve, pipe

TOP = 2**63 - 1


def run(coro):
    return asyncio.run(coro)


def calls(cli, command: str) -> int:
    """How many times Redis ran ``command`` since the last CONFIG RESETSTAT (scripts included)."""
    return int(cli.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def assert_responsive(srv) -> None:
    import redis

    fast = redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=1, socket_connect_timeout=1)
    assert fast.ping() is True


def records(steps) -> list[dict]:
    return [{"step": s, "loss": 1.0 + (s % 7) / 10, "grad_norm": 1.0, "lr": 1e-3, "ts": 1.7e9}
            for s in steps]


def accounted(cols) -> int:
    """Steps a series read holds: raw rows count one, downsampled rows their bucket's steps."""
    return sum(int(e["ds_steps"]) if e and "ds_width" in e else 1 for e in cols.extra)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("retention", [0, 3600])
def test_steps_up_to_the_int64_limit_are_stored_and_read_back(redis_proc, retention):
    """The last step a record may carry, alone on a new run (the TTL refresh of the first write
    counted chunk numbers past 2^53 in doubles, where ci + 1 == ci: Redis never answered again),
    then steps just below it and just below 2^53 chunks."""
    near_2_53 = 2**53 * ser.CHUNK
    steps = [TOP - 5000, TOP - 961, TOP - 960, TOP - 1, TOP]

    async def go():
        st = RedisStore(redis_proc.url, retention_seconds=retention)
        try:
            r = await pipe(st).ingest("top", cols_of(records([TOP])))
            assert (r.accepted, r.duplicates) == (1, 0)
            r = await pipe(st).ingest("top", cols_of(records(steps)))
            assert (r.accepted, r.duplicates, r.out_of_order) == (4, 1, 4)
            await pipe(st).put_meta("top", {"model": "m"})
            got = await st.read_series("top")
            assert got.step == steps
            assert (await st.get_run("top")).last_step == TOP
            r = await pipe(st).ingest("edge", cols_of(records([near_2_53 - 1, near_2_53, near_2_53 + 1])))
            assert r.accepted == 3
            assert (await st.read_series("edge")).step == [near_2_53 - 1, near_2_53, near_2_53 + 1]
        finally:
            await st.close()

    run(go())
    assert_responsive(redis_proc)


@pytest.mark.timeout(60)
def test_late_steps_at_huge_step_numbers_land_under_exact_chunk_keys(redis_proc):
    """A late step at step >= 9.6e16 was written under ``raw:1.0416666666667e+14`` (Lua's number
    formatting), a key nothing reads: acknowledged, then lost."""
    base = 10**17

    async def go():
        st = RedisStore(redis_proc.url, retention_seconds=3600)
        try:
            await pipe(st).ingest("late", cols_of(records([base + 10])))
            r = await pipe(st).ingest("late", cols_of(records([base + 3, base + 7])))
            assert (r.accepted, r.out_of_order) == (2, 2)
            assert (await st.read_series("late")).step == [base + 3, base + 7, base + 10]
            # far below the raw window: folded into its downsampled bucket, counted once
            r = await pipe(st).ingest("late", cols_of(records([base - 10**9])))
            assert (r.accepted, r.out_of_order) == (1, 1)
            r = await pipe(st).ingest("late", cols_of(records([base - 10**9])))
            assert (r.accepted, r.duplicates) == (0, 1)
            got = await st.read_series("late")
            assert accounted(got) == 4 and got.step[-3:] == [base + 3, base + 7, base + 10]
        finally:
            await st.close()

    run(go())
    keys = [k.decode() for k in redis_proc.client().keys("lw:{default/late}:raw:*")]
    assert keys and all(re.fullmatch(r"lw:\{default/late\}:raw:\d+", k) for k in keys), keys
    assert_responsive(redis_proc)


def _gapped_run(st: RedisStore, run_id: str, gap: int):
    async def go():
        await pipe(st).ingest(run_id, cols_of(curve(100)))
        tail = curve(100)
        for r in tail:
            r["step"] += gap
        await pipe(st).ingest(run_id, cols_of(tail))
    return go()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("gap", [10**8, 10**15])
def test_a_metadata_put_after_a_gap_touches_only_the_stored_chunks(redis_proc, gap):
    """PUT metadata refreshes the TTL of the run's raw chunks: the ones that exist, not every
    chunk number from the first to the last step (10^12 of them after a gap of 10^15)."""
    cli = redis_proc.client()

    async def go():
        st = RedisStore(redis_proc.url, retention_seconds=3600)
        try:
            await _gapped_run(st, "meta", gap)
            cli.config_resetstat()
            s = await pipe(st).put_meta("meta", {"model": "m", "status": "finished"})
            assert s.meta["status"] == "finished" and s.n_steps == 200
        finally:
            await st.close()

    run(go())
    assert calls(cli, "expire") <= 30
    ttls = [cli.ttl(k) for k in cli.keys("lw:{default/meta}:*")]
    assert ttls and all(0 < t <= 3600 + 360 for t in ttls)
    assert_responsive(redis_proc)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("gap", [10**8, 10**15])
def test_reading_a_run_after_a_gap_reads_only_the_stored_chunks(redis_proc, gap):
    """A whole-run read and a range read across the gap fetch the chunks and buckets that exist
    (a read after a gap of 10^9 fetched a million empty chunk keys: 28 s and +570 MB)."""
    cli = redis_proc.client()

    async def go():
        st = RedisStore(redis_proc.url)
        try:
            await _gapped_run(st, "read", gap)
            cli.config_resetstat()
            whole = await st.read_series("read")
            part = await st.read_series("read", gap - 5, gap + 49)
            return whole, part
        finally:
            await st.close()

    whole, part = run(go())
    assert accounted(whole) == 200 and whole.step[-100:] == [gap + k for k in range(100)]
    assert whole.step == sorted(whole.step)
    assert part.step == [gap + k for k in range(50)]
    assert calls(cli, "get") <= 10
    assert_responsive(redis_proc)


@pytest.mark.timeout(60)
def test_batches_after_a_gap_or_at_a_stride_fold_in_a_few_transactions(redis_proc):
    """Downsampling folds the chunks that exist, many per transaction: after a gap the next
    batches do not walk through the empty chunk numbers (1,000 transactions a batch, 3-12 s),
    and a run logged every 256 steps (133 chunks a 500-record batch) folds in a few."""
    cli = redis_proc.client()

    async def go():
        st = RedisStore(redis_proc.url, raw_chunks=2, levels=NARROW)
        try:
            await _gapped_run(st, "gap", 10**12)
            cli.config_resetstat()
            for k in range(5):
                more = curve(100)
                for r in more:
                    r["step"] += 10**12 + 100 * (k + 1)
                await pipe(st).ingest("gap", cols_of(more))
            after_gap = calls(cli, "exec")
            cli.config_resetstat()
            stride = records(range(0, 256 * 2000, 256))
            for i in range(0, len(stride), 500):
                await pipe(st).ingest("stride", cols_of(stride[i:i + 500]))
            per_batch = calls(cli, "exec") / 4
            return after_gap, per_batch, await st.read_series("gap"), await st.read_series("stride")
        finally:
            await st.close()

    after_gap, per_batch, gap_series, stride_series = run(go())
    assert after_gap <= 10
    assert per_batch <= 6
    assert accounted(gap_series) == 700 and accounted(stride_series) == 2000
    assert len(redis_proc.client().keys("lw:{default/stride}:raw:*")) <= 3
    assert_responsive(redis_proc)


@pytest.mark.timeout(90)
def test_the_int64_limit_through_http_then_metadata_and_reads(redis_proc, service_factory):
    """The repro as a user meets it: one record at step 2^63-1, then the client's closing
    metadata PUT and a read of the run, on a service with the default retention."""
    from service_helpers import client, post_records

    svc = service_factory(env={"LOSSWATCH_STORE": redis_proc.url})
    c = client(svc.url)
    r = post_records(c, "edge", [{"step": TOP, "loss": 1.0}])
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    r = post_records(c, "edge", [{"step": TOP - 1, "loss": 1.0}, {"step": 10**17, "loss": 2.0}])
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    assert c.put("/v1/runs/edge", json={"status": "finished"}).status_code == 200
    got = c.get("/v1/runs/edge/steps").json()
    assert got["series"]["step"][-2:] == [TOP - 1, TOP] and got["total"] == 3
    assert c.get("/v1/runs/edge").json()["last_step"] == TOP
    assert c.get("/readyz").status_code == 200
    assert_responsive(redis_proc)


@pytest.mark.timeout(60)
def test_runs_written_before_the_chunk_index_are_indexed_once(redis_proc):
    """Data of an earlier version has raw chunks but no ``rc`` index: ``prepare`` (run by the
    service at start) lists them, so they are read back and refreshed again."""
    cli = redis_proc.client()

    async def go():
        st = RedisStore(redis_proc.url, retention_seconds=3600)
        try:
            await pipe(st).ingest("old", cols_of(curve(3000)))
            cli.delete("lw:{default/old}:rc", "lw:layout")           # as an earlier version left it
            assert accounted(await st.read_series("old")) == 0
            await st.prepare()
            assert cli.get("lw:layout") == b"4" and 0 < cli.ttl("lw:{default/old}:rc") <= 3600 + 360
            got = await st.read_series("old")
            assert got.step == list(range(3000))
            cli.delete("lw:{default/old}:rc")
            await st.prepare()                               # done once: not scanned again
            assert cli.exists("lw:{default/old}:rc") == 0
        finally:
            await st.close()

    run(go())
    assert_responsive(redis_proc)
