"""The ingest pipeline and the snapshot contract of the stores: both stores pass one contract test
of load/commit (versions, compare-and-set, late steps, alerts, notification claims, metadata),
two replicas on one real Redis committing the same run concurrently lose nothing and never
claim a notification twice, and a conflict is retried (a bounded number of times)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from losswatch.service.notify import dedupe_key
from losswatch.service.pipeline import IngestPipeline, split_batch
from losswatch.service.stores.base import Advice, Committed, RunCommit, Snapshot, StoreUnavailable
from losswatch.service.stores.memory import MemoryStore
from losswatch.service.stores.redis import RedisStore
from test_redis_store import assert_same_series, cols_of, curve, pipe, prefix_rounds


class State:
    """Detector state as the stores see it: something with ``to_bytes`` (they never look inside)."""

    def __init__(self, b: bytes) -> None:
        self.b = b

    def to_bytes(self) -> bytes:
        return self.b


def alert(aid: str, step: int, now: float) -> dict:
    return {"id": aid, "run_id": "r", "step": step, "last_step": step, "resolved_step": None, "kind": "nan",
            "severity": "critical", "message": "NaN.", "event": "raised", "acknowledged": False,
            "project": "p", "updated_at": now}


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        st = MemoryStore()
    else:
        st = RedisStore(request.getfixturevalue("redis_proc").url)
    yield st
    asyncio.run(st.close())


def test_both_stores_keep_the_snapshot_contract(store):
    recs = curve(40)
    T = float(int(time.time()))      # whole seconds: the stores keep times exactly

    async def go():
        assert await store.load("p", "r") == Snapshot(version=0, engine_state=None, last_step=None)
        done = await store.commit(RunCommit(
            project="p", run_id="r", expected_version=0, now=T + 0, engine=State(b"one"),
            cols=cols_of(recs[:20]), in_order=list(range(20)), alerts=[alert("r:nan:3", 3, T + 0)],
            advice=Advice("critical", {"type": "stop", "reason": "x"}, {"loss": 1.0}, None),
            claims=["r:nan:3:raised:3"]))
        assert done == Committed(version=1, stored_late=0, duplicate_late=0, alerts=[(T + 0, None, True)],
                                 claimed=[True])
        assert await store.load("p", "r") == Snapshot(version=1, engine_state=b"one", last_step=19)

        # a change computed from version 0 again: refused, nothing written, the current snapshot back
        stale = RunCommit(project="p", run_id="r", expected_version=0, now=T + 1, engine=State(b"stale"),
                          cols=cols_of(recs[20:25]), in_order=list(range(5)), meta={"lost": True})
        assert await store.commit(stale) == Snapshot(version=1, engine_state=b"one", last_step=19)
        s = await store.get_run("r", project="p")
        assert (s.n_steps, s.last_step, s.meta, s.health) == (20, 19, {}, "critical")

        # a late step already stored is a duplicate; the same alert again keeps its first time and
        # its acknowledgement; a claim already won is not won again
        assert (await store.ack_alert("r:nan:3", project="p", now=T + 3))["acknowledged"] is True
        done = await store.commit(RunCommit(
            project="p", run_id="r", expected_version=1, now=T + 4, engine=State(b"two"),
            cols=cols_of([recs[5], recs[25], recs[26]]), in_order=[1, 2], late=[0],
            alerts=[alert("r:nan:3", 3, T + 4), alert("r:nan:25", 25, T + 4)],
            advice=Advice("ok", None, {"loss": 0.5}, []), claims=["r:nan:3:raised:3", "r:nan:25:raised:25"]))
        assert done == Committed(version=2, stored_late=0, duplicate_late=1,
                                 alerts=[(T + 0, T + 3, False), (T + 4, None, True)], claimed=[False, True])

        # a late step not stored yet is stored (out of order); metadata is replaced; a change
        # without advice leaves the summary's health as it was
        done = await store.commit(RunCommit(
            project="p", run_id="r", expected_version=2, now=T + 5, engine=State(b"three"),
            cols=cols_of([recs[22], recs[30]]), in_order=[1], late=[0], meta={"model": "m"}))
        assert (done.version, done.stored_late, done.duplicate_late) == (3, 1, 0)
        s = await store.get_run("r", project="p")
        assert (s.n_steps, s.duplicates, s.out_of_order, s.last_step, s.meta, s.health) == \
               (24, 1, 1, 30, {"model": "m"}, "ok")
        assert (await store.read_series("r", project="p")).step == [*range(20), 22, 25, 26, 30]
        assert {a["id"]: a["raised_at"] for a in await store.list_alerts(run_id="r", project="p")} == \
               {"r:nan:3": T + 0, "r:nan:25": T + 4}
        assert await store.load("p", "r") == Snapshot(version=3, engine_state=b"three", last_step=30)
        assert await store.load("q", "r") == Snapshot(version=0, engine_state=None, last_step=None)

    asyncio.run(go())


def test_a_batch_splits_into_in_order_late_and_repeated_steps():
    s = split_batch([3, 4, 4, 2, 2, 5], 3)
    assert (s.in_order, s.late, s.duplicates) == ([1, 5], [0, 3], 2)


def test_two_replicas_on_one_redis_lose_nothing_and_claim_each_notification_once(redis_proc):
    """Two store objects on one Redis (two replicas' connections, each with its own pipeline and
    engine cache) get overlapping, conflicting batches of one troubled run at the same time:
    every step is stored once, the alerts are those of one process fed the run in order, and each
    notification is claimed by exactly one of them."""
    recs = curve(2000, seed=5, spike_at=500, nan_at=1500, diverge_at=1800)
    rounds = prefix_rounds(recs, random.Random(3), 2)

    async def go():
        replicas = [RedisStore(redis_proc.url), RedisStore(redis_proc.url)]
        ref = MemoryStore()
        try:
            claimed: list[str] = []
            for round_ in rounds:
                res = await asyncio.gather(*(pipe(replicas[k]).ingest("r", cols_of(b), project="p")
                                             for k, b in enumerate(round_)))
                claimed += [dedupe_key(a) for r in res for a in r.notify]
            assert sum(pipe(s).conflicts for s in replicas) > 0, "no commit ever conflicted: not a concurrency test"
            want = [dedupe_key(a) for a in (await pipe(ref).ingest("r", cols_of(recs), project="p")).notify]
            assert want, "the run raised nothing to notify: the test would prove nothing"
            assert [k for k, n in Counter(claimed).items() if n > 1] == []
            assert sorted(claimed) == sorted(want)
            assert_same_series(await replicas[0].read_series("r", project="p"), await ref.read_series("r", project="p"))
            s = await replicas[1].get_run("r", project="p")
            assert (s.n_steps, s.last_step) == (len(recs), len(recs) - 1)
        finally:
            for s in replicas:
                await s.close()

    asyncio.run(go())


def test_a_conflict_reloads_and_retries(redis_proc):
    """A replica whose cached engine is stale (another replica wrote the run since) has its commit
    refused, reloads the run and commits again: the batch is stored once on top of the other's."""
    recs = curve(300)

    async def go():
        a, b = RedisStore(redis_proc.url), RedisStore(redis_proc.url)
        try:
            await pipe(a).ingest("r", cols_of(recs[:100]))
            await pipe(b).ingest("r", cols_of(recs[100:200]))        # a's engine is now one version behind
            res = await pipe(a).ingest("r", cols_of(recs[150:300]))
            assert (pipe(a).conflicts, res.accepted, res.duplicates) == (1, 100, 50)
            s = await a.get_run("r")
            assert (s.n_steps, s.last_step, s.duplicates) == (300, 299, 50)
            assert (await a.load("default", "r")).version == 3
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


class AlwaysOvertaken(MemoryStore):
    """A memory store where another writer commits to the run just before every commit."""

    async def commit(self, change: RunCommit) -> Committed | Snapshot:
        now = await self.load(change.project, change.run_id)
        await super().commit(RunCommit(project=change.project, run_id=change.run_id,
                                       expected_version=now.version, now=change.now, engine=change.engine,
                                       meta={"writer": "other"}))
        return await super().commit(change)


def test_a_run_that_keeps_conflicting_answers_store_unavailable_and_stores_nothing():
    store = AlwaysOvertaken()
    pipeline = IngestPipeline(store)

    async def go():
        with pytest.raises(StoreUnavailable, match="too many concurrent writers"):
            await pipeline.ingest("r", cols_of(curve(10)))
        assert pipeline.conflicts == IngestPipeline.MAX_TRIES
        s = await store.get_run("r")
        assert (s.n_steps, s.last_step) == (0, None)

    asyncio.run(go())


def test_metadata_the_run_already_has_is_answered_without_a_commit(store):
    """A PUT of the metadata the run has (a retry, a client sending it again) stores nothing: the
    run's version stays; other metadata is committed as before."""
    meta = {"project": "p", "optimizer": "adamw", "lr_schedule": {"name": "cosine", "total_steps": 1000}}

    async def go():
        pl = pipe(store)
        await pl.put_meta("r", meta, project="p")
        assert (await store.load("p", "r")).version == 1
        s = await pl.put_meta("r", dict(meta), project="p")
        assert (await store.load("p", "r")).version == 1
        assert s.meta == meta
        s = await pl.put_meta("r", {**meta, "status": "finished"}, project="p")
        assert (await store.load("p", "r")).version == 2
        assert s.meta == {**meta, "status": "finished"}
        await pl.put_meta("r2", {}, project="p")            # a new run with empty metadata is created
        assert (await store.load("p", "r2")).version == 1
        # values Python calls equal but JSON does not (1, 1.0, true) are a change: stored
        await pl.put_meta("r3", {"amp": 1, "lr": 1}, project="p")
        s = await pl.put_meta("r3", {"lr": 1.0, "amp": True}, project="p")
        assert (await store.load("p", "r3")).version == 2
        assert s.meta == {"amp": True, "lr": 1.0} and s.meta["amp"] is True and isinstance(s.meta["lr"], float)
        s = await pl.put_meta("r3", {"lr": 1.0, "amp": True}, project="p")  # key order is no change
        assert (await store.load("p", "r3")).version == 2

    asyncio.run(go())


def test_a_replica_puts_its_metadata_over_what_another_replica_wrote_since(redis_proc):
    """Replica a's engine of the run holds metadata M1 while replica b has stored M2: a's PUT of
    M1 (unchanged in a's eyes) and of M3 (a commit from a stale version) are both stored."""
    m1, m2, m3 = ({"project": "p", "optimizer": o} for o in ("adamw", "sgd", "lion"))

    async def go():
        a, b = RedisStore(redis_proc.url), RedisStore(redis_proc.url)
        try:
            await pipe(a).put_meta("r", m1, project="p")
            await pipe(b).put_meta("r", m2, project="p")
            assert (await pipe(a).put_meta("r", m1, project="p")).meta == m1
            assert (await b.get_run("r", project="p")).meta == m1
            await pipe(b).put_meta("r", m2, project="p")
            assert (await pipe(a).put_meta("r", m3, project="p")).meta == m3
            assert (await b.get_run("r", project="p")).meta == m3
            assert (await a.load("p", "r")).version == 5
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_a_metadata_change_after_redis_lost_its_scripts_is_stored(redis_proc):
    """The commit that also writes the run's index entries calls the script by its digest; a
    Redis that forgot its scripts (a restart, SCRIPT FLUSH) is given it again, and the change is
    stored once."""
    async def go():
        st = RedisStore(redis_proc.url)
        try:
            await pipe(st).put_meta("r", {"optimizer": "adamw"}, project="p")
            redis_proc.client().script_flush()
            s = await pipe(st).put_meta("r", {"optimizer": "sgd"}, project="p")
            assert s.meta == {"optimizer": "sgd"}
            assert (await st.load("p", "r")).version == 2
            assert [r.run_id for r in await st.list_runs(projects=["p"])] == ["r"]
        finally:
            await st.close()

    asyncio.run(go())
