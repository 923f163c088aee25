"""The Redis store on a real Redis Cluster (three primaries on loopback, append-only file fsynced
at every write): every key of a run in one slot, runs spread over the nodes, the same answers as
the memory store (downsampling and late steps included), listings from the sharded indexes, and
a node killed and restarted under a real ``losswatch serve --store redis+cluster://...``: its runs
answer 503 with Retry-After meanwhile, the others go on, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio

from losswatch.service.stores.memory import MemoryStore
from losswatch.service.stores.redis import RedisStore
from service_helpers import client, get_json, get_text, post_records
from test_redis_store import NARROW, alert_key, assert_same_series, cols_of, curve, pipe


def slot(cluster, key: str) -> int:
    return cluster.nodes[0].client().execute_command("CLUSTER", "KEYSLOT", key)


def test_runs_live_in_one_slot_each_and_read_back_as_on_the_memory_store(redis_cluster):
    runs = [f"c{i}" for i in range(9)]
    troubled = curve(3000, seed=1, spike_at=900, nan_at=2000, diverge_at=2600)
    late = [r for r in troubled if r["step"] % 97 == 0]            # held back, sent at the end
    sent = [r for r in troubled if r["step"] % 97 != 0]

    async def go():
        red = RedisStore(redis_cluster.url, raw_chunks=2, levels=NARROW, prefix="lwc1:")
        mem = MemoryStore(raw_chunks=2, levels=NARROW)
        try:
            await red.prepare()
            for st in (red, mem):
                await pipe(st).put_meta("c0", {"model": "m"}, project="p")
                for i in range(0, len(sent), 250):
                    await pipe(st).ingest("c0", cols_of(sent[i:i + 250]), project="p")
                await pipe(st).ingest("c0", cols_of(late + late[:5]), project="p")   # late, then duplicates
                for rid in runs[1:]:
                    await pipe(st).ingest(rid, cols_of(curve(20)), project="p")
            assert_same_series(await red.read_series("c0", project="p"), await mem.read_series("c0", project="p"))
            sr, sm = await red.get_run("c0", project="p"), await mem.get_run("c0", project="p")
            for f in ("meta", "last_step", "n_steps", "duplicates", "out_of_order", "health", "recommendation"):
                assert getattr(sr, f) == getattr(sm, f), f
            assert sr.n_steps == len(troubled) and sr.out_of_order == len(late)
            ar = await red.list_alerts(run_id="c0", project="p")
            assert ar and sorted(map(alert_key, ar)) == sorted(map(alert_key, await mem.list_alerts(run_id="c0", project="p")))
            assert sorted(a["id"] for a in await red.list_alerts(projects=["p"])) == sorted(a["id"] for a in ar)
            assert (await red.ack_alert(ar[0]["id"], project="p"))["acknowledged"] is True
            await red.record_action("c0", {"step": 5}, project="p")
            assert await red.list_actions("c0", project="p") == [{"step": 5}]
            assert [s.run_id for s in await red.list_runs(projects=["p"])] == runs

            cli = redis_cluster.nodes[0]
            keys = [k.decode() for n in redis_cluster.nodes for k in n.client().keys("lwc1:{p/c0}:*")]
            assert len(keys) > 5 and len({slot(redis_cluster, k) for k in keys}) == 1
            homes = {redis_cluster.node_of(f"lwc1:{{p/{rid}}}:s").port for rid in runs}
            assert len(homes) > 1, "all runs on one node: the test proves nothing about a cluster"
            assert cli.client().exists("lwc1:layout")
        finally:
            await red.close()

    asyncio.run(go())


def test_a_node_down_answers_503_for_its_runs_and_loses_nothing(redis_cluster, service_factory):
    """Batches of eight runs through a real service on the cluster; one node is killed with
    SIGKILL mid-stream: its runs get 503 with Retry-After while the others are stored; after it
    is restarted (its append-only file reloaded), the held batches go through and every step
    acknowledged before, during and after is there, once."""
    svc = service_factory(env={"LOSSWATCH_STORE": redis_cluster.url, "LOSSWATCH_STORE_TIMEOUT_MS": "1000"})
    runs = [f"k{i}" for i in range(8)]
    recs = curve(300, seed=9)
    victim = redis_cluster.node_of("lw:{default/k0}:s")
    on_victim = {r for r in runs if redis_cluster.node_of(f"lw:{{default/{r}}}:s") is victim}
    assert on_victim and len(on_victim) < len(runs)
    held: dict[str, list[dict]] = {r: [] for r in runs}
    with client(svc.url) as c:
        for r in runs:
            assert post_records(c, r, recs[:100]).status_code == 200
        victim.kill9()
        try:
            for r in runs:
                res = post_records(c, r, recs[100:200])
                if r in on_victim:
                    assert res.status_code == 503, (r, res.status_code, res.text)
                    assert int(res.headers["Retry-After"]) >= 1
                    held[r] = recs[100:200]
                else:
                    assert res.status_code == 200, (r, res.text)
        finally:
            victim.start()
            redis_cluster.wait_whole()
        for r in runs:
            batch = held[r] + recs[200:]
            res = post_records(c, r, batch)
            assert res.status_code == 200, (r, res.text)
            assert res.json()["accepted"] == len(batch)
        for r in runs:
            s = get_json(svc.url, f"/v1/runs/{r}")
            assert (s["n_steps"], s["last_step"], s["duplicates"]) == (300, 299, 0), r
            assert get_json(svc.url, f"/v1/runs/{r}/steps")["series"]["step"] == list(range(300))
        listed = {x["run_id"] for x in get_json(svc.url, "/v1/runs")["runs"]}
        assert set(runs) <= listed
        metrics = get_text(svc.url, "/metrics")         # per-run gauges read from every node
        for r in runs:
            assert f'losswatch_run_step{{project="default",run="{r}"}} 299.0' in metrics, r
