"""The Redis store against a real redis-server: same answers as the memory store, exactly-once
under concurrent writers, downsampling with bounded memory, retention, and Redis going away."""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
import weakref

import numpy as np
import pytest

from losswatch.service.pipeline import IngestPipeline
from losswatch.service.stores import series as ser
from losswatch.service.stores.base import Columns, StoreUnavailable
from losswatch.service.stores.memory import MemoryStore
from losswatch.service.stores.redis import RedisStore, script_args
from service_helpers import same

NARROW = (ser.Level(64, 4), ser.Level(128, 4), ser.Level(512, None))


def curve(n: int, seed: int = 0, *, nan_at: int | None = None, spike_at: int | None = None,
          diverge_at: int | None = None) -> list[dict]:
    """A training-like run: decaying noisy loss, grad-norm, constant LR, optional troubles."""
    rng = random.Random(seed)
    out = []
    for s in range(n):
        loss = 2.0 * math.exp(-s / 300) + 0.3 + rng.gauss(0, 0.02)
        g = 1.0 + rng.gauss(0, 0.05)
        if diverge_at is not None and s >= diverge_at:
            loss *= 1.1 ** (s - diverge_at)
            g *= 1.2 ** (s - diverge_at)
        if spike_at is not None and s == spike_at:
            loss *= 20
        if nan_at is not None and s == nan_at:
            loss = float("nan")
        out.append({"step": s, "loss": loss, "grad_norm": g, "lr": 1e-3,
                    "val_loss": (loss if s % 50 == 0 else None), "ts": 1.7e9 + s,
                    "extra": ({"tokens": float(s * 10)} if s % 25 == 0 else None)})
    return out


def cols_of(recs: list[dict]) -> Columns:
    c = Columns()
    for r in recs:
        c.step.append(r["step"])
        for f in ("loss", "grad_norm", "lr", "val_loss", "ts"):
            getattr(c, f).append(r.get(f))
        c.extra.append(r.get("extra"))
    return c


_PIPELINES: "weakref.WeakKeyDictionary[object, IngestPipeline]" = weakref.WeakKeyDictionary()


def pipe(store) -> IngestPipeline:
    """The ingest pipeline of ``store``: one per store, as a service process holds one (a
    second store object on the same Redis is a second replica)."""
    p = _PIPELINES.get(store)
    if p is None:
        p = _PIPELINES[store] = IngestPipeline(store)
    return p


def assert_same_series(x: Columns, y: Columns) -> None:
    assert x.step == y.step
    for f in ("loss", "grad_norm", "lr", "val_loss", "ts"):
        xs, ys = getattr(x, f), getattr(y, f)
        bad = [(s, a, b) for s, a, b in zip(x.step, xs, ys) if not same(a, b)]
        assert not bad, (f, bad[:5])
    assert [e or None for e in x.extra] == [e or None for e in y.extra]


def alert_key(a: dict) -> tuple:
    return (a["id"], a["kind"], a["severity"], a["step"], a["last_step"], a["resolved_step"],
            a["message"], str(a["action"]))


def run(coro):
    return asyncio.run(coro)


def test_same_answers_as_the_memory_store(redis_proc):
    """Random batches with duplicates, out-of-order steps, NaN/None/Infinity and extras give the
    same per-batch results, series, summary and alerts on both stores."""
    recs = curve(3000, seed=1, spike_at=900, nan_at=2000, diverge_at=2600)
    recs[1500]["grad_norm"] = float("inf")
    recs[1501]["lr"] = None
    rng = random.Random(7)
    batches = []
    i = 0
    while i < len(recs):
        n = rng.choice([1, 3, 17, 50, 200])
        b = list(recs[i:i + n])
        i += n
        if rng.random() < 0.3 and i > 10:       # retransmit some earlier steps (duplicates)
            b += rng.sample(recs[:i], 3)
        if rng.random() < 0.2:
            rng.shuffle(b)                       # out of order inside the batch
        batches.append(b)
    # steps held back and sent late (out of order, never seen by the detectors)
    held = {r["step"] for r in rng.sample(recs[100:2900], 40)}
    batches = [[r for r in b if r["step"] not in held] for b in batches]
    batches = [b for b in batches if b]
    batches.insert(len(batches) // 2, [r for r in recs if r["step"] in held][:20])
    batches.append([r for r in recs if r["step"] in held])

    async def go():
        mem = MemoryStore()
        red = RedisStore(redis_proc.url)
        try:
            await pipe(mem).put_meta("r", {"model": "m"}, project="p")
            await pipe(red).put_meta("r", {"model": "m"}, project="p")
            for b in batches:
                a = await pipe(mem).ingest("r", cols_of(b), project="p")
                c = await pipe(red).ingest("r", cols_of(b), project="p")
                assert (a.accepted, a.duplicates, a.out_of_order, a.health, a.project) == \
                       (c.accepted, c.duplicates, c.out_of_order, c.health, c.project)
                assert [alert_key(x) for x in a.alerts] == [alert_key(x) for x in c.alerts]
                assert a.new_alert_ids == c.new_alert_ids
                assert a.recommendation == c.recommendation
            assert_same_series(await mem.read_series("r", project="p"), await red.read_series("r", project="p"))
            assert_same_series(await mem.read_series("r", 1000, 1999, project="p"),
                               await red.read_series("r", 1000, 1999, project="p"))
            sm, sr = await mem.get_run("r", project="p"), await red.get_run("r", project="p")
            for f in ("project", "meta", "last_step", "n_steps", "duplicates", "out_of_order",
                      "health", "recommendation"):
                assert getattr(sm, f) == getattr(sr, f), f
            assert all(same(sm.last[k], sr.last[k]) for k in sm.last)
            assert sorted(map(alert_key, sm.active_alerts)) == sorted(map(alert_key, sr.active_alerts))
            am = await mem.list_alerts(run_id="r", project="p")
            ar = await red.list_alerts(run_id="r", project="p")
            assert am, "the troubled run raised no alert: the comparison would be empty"
            assert sorted(map(alert_key, am)) == sorted(map(alert_key, ar))
            assert {a["project"] for a in am + ar} == {"p"}
            # acknowledgement survives; filters agree
            aid = am[0]["id"]
            assert await red.ack_alert(aid) is None            # not an alert of project "default"
            assert (await red.ack_alert(aid, project="p"))["acknowledged"] is True
            assert (await red.get_alert(aid, project="p"))["acknowledged"] is True
            assert await red.ack_alert("r:nan:999999", project="p") is None
            for kw in ({"kind": am[0]["kind"]}, {"severity": "critical"}, {"projects": ["other"]}):
                assert sorted(a["id"] for a in await mem.list_alerts(**kw)) == \
                       sorted(a["id"] for a in await red.list_alerts(**kw)), kw
            # the same run id in another project is another run
            await pipe(red).ingest("r", cols_of(recs[:1]), project="q")
            assert [s.run_id for s in await red.list_runs(projects=["p"])] == ["r"]
            assert [(s.project, s.n_steps) for s in await red.list_runs(projects=["q"])] == [("q", 1)]
            assert (await red.get_run("r", project="p")).n_steps == sr.n_steps
            assert await red.get_run("r") is None
            # action reports
            with pytest.raises(KeyError):
                await red.record_action("nope", {"step": 1}, project="p")
            await red.record_action("r", {"step": 5, "applied": True}, project="p")
            assert await red.list_actions("r", project="p") == [{"step": 5, "applied": True}]
            assert await red.list_actions("r", project="q") == []
            assert await red.read_series("nope") is None and await red.get_run("nope") is None
        finally:
            await red.close()

    run(go())


def prefix_rounds(recs: list[dict], rng: random.Random, writers: int) -> list[list[list[dict]]]:
    """Rounds of batches: in each round every writer sends a prefix of the same slice (so
    whichever lands first, the detectors see the same in-order stream as one process would),
    the slices overlapping by random retransmissions of earlier steps."""
    rounds = []
    i = 0
    while i < len(recs):
        n = rng.randint(5, 120)
        sl = recs[i:i + n]
        round_ = []
        for _ in range(writers):
            k = rng.randint(1, len(sl))
            b = list(sl[:k])
            if i and rng.random() < 0.5:
                b = rng.sample(recs[max(0, i - 300):i], 4) + b   # old steps first: duplicates
            round_.append(b)
        round_[rng.randrange(writers)] = list(sl)               # someone sends the whole slice
        rounds.append(round_)
        i += n
    return rounds


def test_concurrent_writers_store_each_step_once_and_agree_with_one_process(redis_proc):
    """Four store instances (four replicas' worth of caches and connections) write interleaved,
    conflicting batches of one run concurrently: every step stored once, counts add up, and the
    alerts are those of a single store fed the run in order."""
    recs = curve(2500, seed=3, spike_at=700, nan_at=1800, diverge_at=2200)
    rng = random.Random(11)
    rounds = prefix_rounds(recs, rng, 4)

    async def go():
        stores = [RedisStore(redis_proc.url) for _ in range(4)]
        ref = MemoryStore()
        try:
            acc = dup = 0
            for round_ in rounds:
                res = await asyncio.gather(*(pipe(stores[k]).ingest("r", cols_of(b)) for k, b in enumerate(round_)))
                acc += sum(r.accepted for r in res)
                dup += sum(r.duplicates for r in res)
            await pipe(ref).ingest("r", cols_of(recs))
            assert acc == len(recs)
            assert acc + dup == sum(len(b) for r in rounds for b in r)
            assert sum(pipe(s).conflicts for s in stores) > 0, "no write ever conflicted: not a concurrency test"
            got = await stores[1].read_series("r")
            assert_same_series(got, await ref.read_series("r"))
            s = await stores[2].get_run("r")
            assert (s.n_steps, s.last_step, s.out_of_order) == (len(recs), len(recs) - 1, 0)
            want = await ref.list_alerts(run_id="r")
            assert want
            assert sorted(map(alert_key, await stores[3].list_alerts(run_id="r"))) == sorted(map(alert_key, want))
        finally:
            for st in stores:
                await st.close()

    run(go())


def test_old_steps_are_downsampled_with_bounded_keys_nan_kept_and_late_steps_exact(redis_proc):
    n = 30_000
    recs = curve(n, seed=5)
    recs[1234]["loss"] = float("nan")
    recs[20_000]["loss"] = 1e6
    missing = set(range(3000, 3010)) | {25_000}          # never sent at first: gaps
    sent = [r for r in recs if r["step"] not in missing]

    async def go():
        st = RedisStore(redis_proc.url, raw_chunks=2, levels=NARROW)
        try:
            for i in range(0, len(sent), 997):
                await pipe(st).ingest("r", cols_of(sent[i:i + 997]))
            cli = redis_proc.client()
            raw_keys = cli.keys("lw:{default/r}:raw:*")
            assert 1 <= len(raw_keys) <= 3                  # the window, plus the head chunk
            sizes = {k: cli.hlen(f"lw:{{default/r}}:{k}") for k in ("d1", "d2", "d3")}
            assert sizes["d1"] <= NARROW[0].keep + ser.CHUNK // NARROW[0].width
            assert sizes["d2"] <= NARROW[1].keep + 2 and sizes["d3"] > 0
            s = await st.read_series("r")
            # every step is accounted for exactly once, at some resolution
            ds = [e for e in s.extra if e and "ds_width" in e]
            raw_rows = len(s) - len(ds)
            assert raw_rows + sum(e["ds_steps"] for e in ds) == len(sent)
            assert s.step == sorted(s.step)
            # the NaN stays visible in its (level-3, 512-step) bucket, min/max are the true ones
            i = max(k for k, st_ in enumerate(s.step) if st_ <= 1234)
            assert math.isnan(s.loss[i]) and s.extra[i]["loss_nan"] == 1
            lo, w = s.step[i], int(s.extra[i]["ds_width"])
            vals = [r["loss"] for r in recs[lo:lo + w] if r["step"] not in missing and not math.isnan(r["loss"])]
            assert s.extra[i]["loss_min"] == min(vals) and s.extra[i]["loss_max"] == max(vals)
            j = max(k for k, st_ in enumerate(s.step) if st_ <= 20_000)
            assert s.extra[j]["loss_max"] == 1e6
            # a range read returns the rows (raw or buckets) that start inside it
            part = await st.read_series("r", 5000, 29_000)
            assert part.step == [x for x in s.step if 5000 <= x <= 29_000]
            assert (await st.read_series("r", 29_500, None)).step == [x for x in s.step if x >= 29_500]
            # late steps into downsampled ranges: a gap is filled, a repeat is a duplicate
            late = [recs[k] for k in sorted(missing)] + [recs[100], recs[3005], recs[29_990]]
            r = await pipe(st).ingest("r", cols_of(late))
            assert (r.accepted, r.duplicates, r.out_of_order) == (len(missing), 3, len(missing))
            r = await pipe(st).ingest("r", cols_of(late))
            assert (r.accepted, r.duplicates) == (0, len(late))
            summ = await st.get_run("r")
            assert summ.n_steps == n
            s2 = await st.read_series("r")
            assert sum(e["ds_steps"] for e in s2.extra if e and "ds_width" in e) + \
                sum(1 for e in s2.extra if not (e and "ds_width" in e)) == n
        finally:
            await st.close()

    run(go())


def test_every_key_of_a_run_gets_a_ttl(redis_proc):
    """With retention on, no key of a run lives forever: chunks that grew, downsampled levels,
    alerts, extras, metadata and actions all carry a TTL of at most retention + slack."""
    async def go():
        st = RedisStore(redis_proc.url, retention_seconds=100, raw_chunks=1)
        try:
            await pipe(st).put_meta("t", {"a": 1})
            recs = curve(5000, seed=3, spike_at=3000, nan_at=4000)
            for i in range(0, 5000, 333):
                await pipe(st).ingest("t", cols_of(recs[i:i + 333]))
            await st.record_action("t", {"step": 1})
            cli = redis_proc.client()
            keys = cli.keys("lw:{default/t}:*")
            kinds = {k.decode().split("}:")[1].split(":")[0] for k in keys}
            assert {"s", "raw", "d1", "ds", "x", "a", "act"} <= kinds
            ttls = {k: cli.ttl(k) for k in keys}
            assert all(0 < t <= 110 for t in ttls.values()), ttls
        finally:
            await st.close()

    run(go())


def test_runs_expire_after_the_retention_time(redis_proc):
    async def go():
        st = RedisStore(redis_proc.url, retention_seconds=1)
        try:
            await pipe(st).ingest("short", cols_of(curve(2000)), project="p")
            await pipe(st).put_meta("short", {"a": 1}, project="p")
            cli = redis_proc.client()
            keys = cli.keys("lw:{p/short}:*")
            assert keys and all(0 < cli.pttl(k) <= 1000 for k in keys)
            assert [s.run_id for s in await st.list_runs()] == ["short"]
            time.sleep(1.3)
            assert await st.get_run("short", project="p") is None
            assert await st.list_runs() == []
            assert cli.keys("lw:{p/short}:*") == []
            assert await st.list_alerts() == []
        finally:
            await st.close()

    run(go())


def test_redis_down_raises_store_unavailable_and_a_retry_loses_nothing(redis_factory):
    srv = redis_factory(appendonly=True, appendfsync="always")
    recs = curve(600, seed=2)

    async def go():
        st = RedisStore(srv.url)
        try:
            assert (await pipe(st).ingest("r", cols_of(recs[:300]))).accepted == 300
            srv.kill9()
            for call in (pipe(st).ingest("r", cols_of(recs[300:])), st.ping(), st.read_series("r"),
                         st.get_run("r"), st.list_runs(), st.list_alerts()):
                with pytest.raises(StoreUnavailable) as e:
                    await call
                assert "unreachable" in str(e.value) and "127.0.0.1" in str(e.value)
            srv.start()
            await st.ping()
            r = await pipe(st).ingest("r", cols_of(recs[250:]))           # the client's retry, overlapping
            assert (r.accepted, r.duplicates) == (300, 50)
            s = await st.read_series("r")
            assert s.step == list(range(600))
        finally:
            await st.close()

    run(go())


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_kill9_of_redis_with_aof_keeps_every_acknowledged_step(redis_factory, fsync):
    """Redis is killed (SIGKILL, from another thread) in the middle of a stream of batches; after
    the restart every acknowledged batch is there (and the one in flight is all or nothing), and a
    fresh store (a restarted service) continues the run from the stored detector state: the same
    alerts as one uninterrupted process.

    appendfsync always: the AOF is fsynced before the reply. everysec: the AOF is written (to the
    OS page cache) before the reply and fsynced each second, so a crash of the Redis *process*
    loses nothing acknowledged either; only a crash of the machine can lose the last second.
    """
    srv = redis_factory(appendonly=True, appendfsync=fsync)
    recs = curve(4000, seed=9, spike_at=1500, diverge_at=3500)
    acked: list[int] = []

    def killer():
        while len(acked) < 600:
            time.sleep(0.001)
        srv.kill9()

    async def go():
        st = RedisStore(srv.url)
        try:
            for i in range(0, 4000, 25):
                await pipe(st).ingest("r", cols_of(recs[i:i + 25]))
                acked.extend(range(i, i + 25))
        except StoreUnavailable:
            pass
        finally:
            await st.close()

    t = threading.Thread(target=killer)
    t.start()
    run(go())
    t.join()
    assert 600 <= len(acked) < 4000

    async def after():
        srv.start()
        st2 = RedisStore(srv.url)                       # a restarted service: empty caches
        ref = MemoryStore()
        try:
            stored = (await st2.read_series("r")).step
            m = len(stored)
            assert stored == list(range(m)) and m >= len(acked) and m % 25 == 0
            assert (await st2.get_run("r")).n_steps == m
            for i in range(0, 4000, 100):               # the client resends from its spool
                await pipe(st2).ingest("r", cols_of(recs[i:i + 100]))
            await pipe(ref).ingest("r", cols_of(recs[:m]))
            for i in range(0, 4000, 100):
                await pipe(ref).ingest("r", cols_of(recs[i:i + 100]))
            assert (await st2.read_series("r")).step == list(range(4000))
            want = await ref.list_alerts(run_id="r")
            assert want
            assert sorted(map(alert_key, await st2.list_alerts(run_id="r"))) == sorted(map(alert_key, want))
        finally:
            await st2.close()

    run(after())


def test_run_summaries_for_metrics_cover_many_runs(redis_proc):
    """1,200 runs: more than one 1,000-run pipeline of list_runs."""
    async def go():
        st = RedisStore(redis_proc.url)
        try:
            t0 = time.time()
            for k in range(0, 1200, 100):
                await asyncio.gather(*(pipe(st).ingest(f"run-{i}", cols_of([{"step": i, "loss": float(i),
                                                                      "grad_norm": None, "lr": 0.1}]),
                                                 project=f"p{i % 3}")
                                       for i in range(k, k + 100)))
            runs = await st.list_runs(active_since=t0 - 1)
            assert len(runs) == 1200
            by_id = {s.run_id: s for s in runs}
            assert by_id["run-1033"].last == {"loss": 1033.0, "grad_norm": None, "lr": 0.1, "val_loss": None,
                                           "spike_rate": 0.0}
            assert by_id["run-1033"].last_step == 1033 and by_id["run-1033"].project == "p1"
            assert len(await st.list_runs(projects=["p0"], active_since=t0 - 1)) == 400
            assert await st.list_runs(active_since=time.time() + 10) == []
        finally:
            await st.close()

    run(go())


def test_none_and_nan_values_round_trip_bit_for_bit():
    """The packed encoding keeps None (not logged), NaN, +-Infinity, -0.0 and exact floats."""
    vals = [None, float("nan"), float("inf"), float("-inf"), -0.0, 0.1, 1e-300, 3.0000000000000004]
    c = Columns(step=list(range(len(vals))), loss=vals, grad_norm=vals[::-1], lr=vals, val_loss=vals,
                ts=vals, extra=[None] * len(vals))
    blob = bytearray(ser.CHUNK_BYTES)
    packed = ser.pack_rows(c, list(range(len(vals))))
    blob[ser.DATA_OFFSET:ser.DATA_OFFSET + len(packed)] = packed
    for k in range(len(vals)):
        blob[k // 8] |= 0x80 >> (k % 8)
    slots, data = ser.decode_slots(bytes(blob))
    assert slots.tolist() == list(range(len(vals)))
    got = ser.values_to_lists(data)
    for j, f in enumerate(ser.FIELDS):
        want = getattr(c, f)
        for a, b in zip(got[j], want):
            assert (a is None and b is None) or (a is not None and b is not None and (
                np.float64(a).tobytes() == np.float64(b).tobytes() or (math.isnan(a) and math.isnan(b))))


def test_packed_rows_are_the_chosen_rows_field_by_field_with_the_none_pattern_and_nan_payloads():
    """pack_rows writes the rows asked for, in that order, each as its five little-endian float64s:
    None as NONE_BITS, a NaN with its own payload, -0.0 as itself."""
    payload_nan = np.frombuffer(np.uint64(0x7FF8000000001234).tobytes(), dtype="<f8")[0].item()
    c = Columns(step=[0, 1, 2], loss=[1.5, None, payload_nan], grad_norm=[None, 2.0, -0.0],
                lr=[0.1, 0.2, None], val_loss=[None, None, None], ts=[10.0, 11.0, 12.0], extra=[None] * 3)
    want = b""
    for i in (2, 0):
        for f in ser.FIELDS:
            v = getattr(c, f)[i]
            want += np.uint64(ser.NONE_BITS).tobytes() if v is None else np.float64(v).tobytes()
    assert ser.pack_rows(c, [2, 0]) == want
    assert ser.pack_rows(c, [2, 0])[:8] == np.uint64(0x7FF8000000001234).tobytes()
    full = Columns(step=[0, 1], loss=[1.0, 2.0], grad_norm=[3.0, 4.0], lr=[5.0, 6.0], val_loss=[7.0, 8.0],
                   ts=[9.0, 10.0], extra=[None] * 2)
    assert ser.pack_rows(full, [0, 1]) == np.array([1.0, 3.0, 5.0, 7.0, 9.0, 2.0, 4.0, 6.0, 8.0, 10.0], "<f8").tobytes()
    assert ser.pack_rows(full, []) == b""


def test_script_arguments_reach_lua_as_the_strings_redis_py_would_send(redis_proc):
    """The COMMIT script reads its arguments from one MessagePack array: every value arrives as
    the string it would have been as its own argument (integers past 2^53 exactly, floats as repr,
    bytes with any content), and a value redis-py refuses is refused."""
    values = [2**63 - 1, 0, -3, 1733500000.123456, 1e-300, "", "é/ü", b"\x00\xff" * 40_000, bytearray(b"ab")]
    values += [f"s{k}" for k in range(70_000)]         # past MessagePack's 16-bit array length
    echo = redis_proc.client().register_script(
        "local A = cmsgpack.unpack(ARGV[1]); local out = {} for k = 1, #A do out[k] = A[k] end return out")
    got = echo(args=[script_args(values)])
    assert got[:9] == [b"9223372036854775807", b"0", b"-3", repr(1733500000.123456).encode(), b"1e-300", b"",
                       "é/ü".encode(), b"\x00\xff" * 40_000, b"ab"]
    assert len(got) == len(values) and got[-1] == b"s69999"
    for bad in (True, None, [1]):
        with pytest.raises(TypeError):
            script_args([bad])


def test_wait_for_replicas_acknowledges_only_replicated_batches(redis_factory):
    """With wait_replicas=1 a batch is acknowledged once a Redis replica has it; with the replica
    gone the store says so (503) and the retry, once it is back, finds the steps stored."""
    primary = redis_factory()
    replica = redis_factory(extra=["--replicaof", "127.0.0.1", str(primary.port)])
    deadline = time.monotonic() + 10
    while replica.client().info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "replica never synced"
        time.sleep(0.05)
    recs = curve(200)

    async def go():
        st = RedisStore(primary.url, wait_replicas=1, wait_timeout_ms=300)
        try:
            assert (await pipe(st).ingest("r", cols_of(recs[:100]))).accepted == 100
            assert replica.client().hget("lw:{default/r}:s", "n_steps") == b"100"   # already on the replica
            replica.kill9()
            with pytest.raises(StoreUnavailable, match="0 of 1 Redis replicas"):
                await pipe(st).ingest("r", cols_of(recs[100:]))
            replica.start()
            deadline = time.monotonic() + 10
            while True:
                try:
                    r = await pipe(st).ingest("r", cols_of(recs[100:]))
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert (r.accepted, r.duplicates) == (0, 100)
            assert (await st.read_series("r")).step == list(range(200))
        finally:
            await st.close()

    run(go())


@pytest.mark.parametrize("width", [8, 64, 960])
def test_vectorised_bucket_statistics_equal_the_step_by_step_fold(width):
    """aggregate_chunk (numpy) gives the bytes of folding each step in with Agg.add, with gaps,
    None, NaN, +-Infinity, a missing timestamp and a bucket holding nothing; for bucket widths
    with a raw and with a compressed step mask."""
    rng = random.Random(3)
    blob = bytearray(ser.CHUNK_BYTES)
    steps = [k for k in range(ser.CHUNK) if not (128 <= k < 192) and rng.random() < 0.8]
    if width == ser.CHUNK:
        steps = steps[::2]
    specials = [None, float("nan"), float("inf"), float("-inf")]
    c = Columns()
    for k in steps:
        c.step.append(7 * ser.CHUNK + k)
        for f in ser.FIELDS:
            v = rng.choice(specials) if rng.random() < 0.1 else rng.uniform(-5, 5)
            getattr(c, f).append(v)
        c.extra.append(None)
    packed = ser.pack_rows(c, list(range(len(steps))))
    for n, k in enumerate(steps):
        off = ser.DATA_OFFSET + k * ser.SLOT_BYTES
        blob[off:off + ser.SLOT_BYTES] = packed[n * ser.SLOT_BYTES:(n + 1) * ser.SLOT_BYTES]
        blob[k // 8] |= 0x80 >> (k % 8)
    fast = ser.aggregate_chunk(7, bytes(blob), width)
    slow = ser.aggregate_chunk_slow(7, bytes(blob), width)
    assert fast == slow     # every statistic to the bit: sums in step order, from +0.0
    if width == 64:
        assert 7 * 15 + 2 not in fast          # the bucket of steps 128-191 holds nothing


def test_a_bucket_of_negative_zeros_sums_to_a_positive_zero_as_the_fold_does():
    c = Columns(step=list(range(64)), loss=[-0.0] * 64, grad_norm=[None] * 64, lr=[None] * 64,
                val_loss=[None] * 64, ts=[None] * 64, extra=[None] * 64)
    got = ser.aggregate_rows(c, range(64), 64)[0]
    assert got == ser._fold_slots(0, np.arange(64), ser.rows_array(c, range(64)), 64)[0]
    assert math.copysign(1.0, ser.Agg.unpack(got, 64).vsum[0]) == 1.0


def _random_rows(rng: random.Random, steps: list[int]) -> Columns:
    specials = [None, float("nan"), float("inf"), float("-inf")]
    c = Columns()
    for s in steps:
        c.step.append(s)
        for f in ser.FIELDS:
            v = rng.choice(specials) if rng.random() < 0.1 else rng.uniform(-5, 5)
            getattr(c, f).append(v)
        c.extra.append(None)
    c.val_loss[:] = [None] * len(steps) if rng.random() < 0.5 else c.val_loss   # a column never logged
    return c


@pytest.mark.parametrize("seed,width", [(0, 64), (1, 64), (2, 8), (3, 960)])
def test_rows_aggregate_like_the_chunks_that_hold_them(seed, width):
    """The memory store folds rows (aggregate_rows, column-wise) into the level-1 buckets the
    Redis store makes from chunk strings (aggregate_chunk): the same buckets, to the bit, across chunks, with gaps, None, NaN and +-Infinity, for a
    prefix (a range) and for any sorted subset of the rows."""
    rng = random.Random(seed)
    steps = sorted(rng.sample(range(5 * ser.CHUNK, 8 * ser.CHUNK), 1500))
    c = _random_rows(rng, steps)
    for idx in (range(len(steps)), sorted(rng.sample(range(len(steps)), 400))):
        chunks: dict[int, bytearray] = {}
        packed = ser.pack_rows(c, list(idx))
        for n, i in enumerate(idx):
            ci, k = divmod(c.step[i], ser.CHUNK)
            blob = chunks.setdefault(ci, bytearray(ser.CHUNK_BYTES))
            off = ser.DATA_OFFSET + k * ser.SLOT_BYTES
            blob[off:off + ser.SLOT_BYTES] = packed[n * ser.SLOT_BYTES:(n + 1) * ser.SLOT_BYTES]
            blob[k // 8] |= 0x80 >> (k % 8)
        want: dict[int, bytes] = {}
        for ci, blob in chunks.items():
            want.update(ser.aggregate_chunk(ci, bytes(blob), width))
        got = ser.aggregate_rows(c, idx, width)
        assert got == want and len(got) >= 3


@pytest.mark.parametrize("sub,width", [(64, 2048), (2048, 131072)])
def test_merged_buckets_equal_the_bucket_by_bucket_fold(sub, width):
    """merge_buckets (all heads at once) gives what folding each narrower bucket in with
    Agg.merge gives, into an empty or a stored bucket, with raw and compressed step masks."""
    rng = random.Random(width)
    for trial in range(20):
        b = rng.randrange(1, 4)
        g = width // sub
        parts = {}
        for sb in rng.sample(range(b * g, (b + 1) * g), rng.randrange(1, 12)):
            steps = sorted(rng.sample(range(sb * sub, (sb + 1) * sub), rng.randrange(1, min(sub, 80))))
            folded = ser.aggregate_rows(_random_rows(rng, steps), range(len(steps)), sub) if sub == 64 else None
            agg = ser.Agg(width=sub)
            if folded:
                agg = ser.Agg.unpack(folded[sb], sub)
            else:
                c = _random_rows(rng, steps)
                for i, s in enumerate(steps):
                    agg.add(s - sb * sub, [getattr(c, f)[i] for f in ser.VALUE_FIELDS], c.ts[i])
            parts[sb] = agg.pack()
        base = None
        if trial % 3 == 0:
            first = ser.Agg(width=width)
            first.add(rng.randrange(width), [1.0, None, 2.0, float("nan")], 5.0)
            base = first.pack()
        want = ser.Agg.unpack(base, width) if base else ser.Agg(width=width)
        for sb in sorted(parts):
            want.merge(ser.Agg.unpack(parts[sb], sub), sb * sub - b * width)
        assert ser.merge_buckets(base, width, b * width, parts, sub) == want.pack()


def test_a_replica_with_a_cached_engine_survives_redis_losing_its_data(redis_proc):
    """Redis restarted without persistence (or flushed): the replica's cached engine is for a
    version Redis no longer has, so the compare-and-set fails and the run starts afresh instead
    of resurrecting state Redis lost or failing forever."""
    recs = curve(300)

    async def go():
        st = RedisStore(redis_proc.url)
        try:
            await pipe(st).ingest("r", cols_of(recs[:200]))
            redis_proc.client().flushall()
            r = await pipe(st).ingest("r", cols_of(recs[200:]))
            assert (r.accepted, r.duplicates) == (100, 0)
            s = await st.get_run("r")
            assert (s.n_steps, s.last_step) == (100, 299)
            assert (await st.read_series("r")).step == list(range(200, 300))
        finally:
            await st.close()

    run(go())


def test_a_run_written_since_its_index_entry_is_listed_as_active(redis_proc):
    """A replica rewrites a run's index entry at most once a minute: a run whose last batch came
    after its entry's time is still found by ``active_since`` (and one quiet since is not)."""
    async def go():
        st = RedisStore(redis_proc.url)
        try:
            t0 = time.time()
            recs = curve(20)
            await pipe(st).ingest("busy", cols_of(recs[:10]), now=t0 - 40)     # indexed at t0 - 40
            await pipe(st).ingest("quiet", cols_of(recs[:10]), now=t0 - 40)
            await pipe(st).ingest("busy", cols_of(recs[10:]), now=t0 - 5)      # entry not rewritten
            scores = {m.decode(): s for k in redis_proc.client().keys("lw:runs:*")
                      for m, s in redis_proc.client().zrange(k, 0, -1, withscores=True)}
            assert scores == {"default/busy": t0 - 40, "default/quiet": t0 - 40}
            assert [s.run_id for s in await st.list_runs(active_since=t0 - 20)] == ["busy"]
            assert [s.run_id for s in await st.list_runs(active_since=t0 - 60)] == ["busy", "quiet"]
        finally:
            await st.close()

    run(go())
