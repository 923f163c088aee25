"""Attempts of a run: after a client rolls back (a rewind in the run metadata), the steps it logs
again are kept as a new attempt, not dropped as duplicates; the detectors go back to their state
at the checkpoint; nothing stored of the earlier attempt is lost. Through the ingest pipeline on
both stores (a real Redis), then through the real service with a real client (HTTP, uvicorn).
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from losswatch.service.attempts import Timeline, timeline_spans
from losswatch.service.pipeline import IngestPipeline
from losswatch.service.stores.memory import MemoryStore
from losswatch.service.stores.redis import RedisStore
from service_helpers import client, get_json, num, post_records
from test_cli_look import losswatch
from test_redis_store import assert_same_series, cols_of

T0 = 1_700_000_000.0      # the first attempt's records are logged from here, one a second
T1 = T0 + 10_000.0        # the re-logged ones later


def healthy(s: int) -> float:
    return 2.0 * math.exp(-s / 200) + 0.5


def recs(steps, loss=healthy, t0: float = T0) -> list[dict]:
    return [{"step": s, "loss": loss(s), "grad_norm": 1.0, "lr": 0.1, "ts": t0 + s} for s in steps]


def diverging(s: int) -> float:
    return healthy(199) * 1.1 ** (s - 199) if s >= 200 else healthy(s)


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        st = MemoryStore(raw_chunks=1)
    else:
        st = RedisStore(request.getfixturevalue("redis_proc").url, raw_chunks=1)
    yield st
    asyncio.run(st.close())


def kinds(res, event: str) -> list[str]:
    return [a["kind"] for a in res.alerts if a.get("event") == event]


def test_a_rewind_keeps_the_relogged_steps_as_a_new_attempt(store) -> None:
    p = IngestPipeline(store)
    ck = {"checkpoints": [{"step": 0}, {"step": 100}]}

    async def go():
        await p.put_meta("r", ck)                     # the client's order: metadata before its records
        assert (await p.ingest("r", cols_of(recs(range(200))))).health == "ok"
        blew = await p.ingest("r", cols_of(recs(range(200, 250), diverging)))
        assert "divergence" in kinds(blew, "raised")
        # the rollback at 250 to the checkpoint of 100; the rewind arrives before the last record
        # of the attempt it ends (step 250) and the re-logged ones, all in one batch
        await p.put_meta("r", {**ck, "rewinds": [{"to_step": 100, "at_step": 250}]})
        assert (await store.get_run("r")).attempt == 1          # begun by its first re-logged step
        res = await p.ingest("r", cols_of(recs([250], diverging) + recs(range(100, 150), t0=T1)))
        assert (res.accepted, res.duplicates) == (51, 0)
        back = [a for a in res.alerts if a["kind"] == "divergence"]
        assert [(a["event"], a["resolved_step"]) for a in back] == [("resolved", 100)]
        assert res.health == "ok"
        again = await p.ingest("r", cols_of(recs(range(100, 150), t0=T1)))   # the same batch again
        assert (again.accepted, again.duplicates) == (0, 50)

        s = await store.get_run("r")
        assert (s.attempt, s.last_step, s.n_steps, s.duplicates) == (2, 149, 301, 50)
        assert s.attempts == [{"attempt": 1, "start": None, "rewound_at": None},
                              {"attempt": 2, "start": 100, "rewound_at": 250}]
        first = await store.read_series("r", attempt=1)
        assert_same_series(first, cols_of(recs(range(200)) + recs(range(200, 251), diverging)))
        assert_same_series(await store.read_series("r", attempt=2), cols_of(recs(range(100, 150), t0=T1)))
        assert_same_series(await store.read_series("r"), cols_of(recs(range(100)) + recs(range(100, 150), t0=T1)))
        assert_same_series(await store.read_series("r", 90, 109),
                           cols_of(recs(range(90, 100)) + recs(range(100, 110), t0=T1)))
        assert len(await store.read_series("r", attempt=3)) == 0

        # the detectors run from the checkpoint's state: the same run-away raises again
        await p.ingest("r", cols_of(recs(range(150, 200), t0=T1)))
        relapse = await p.ingest("r", cols_of(recs(range(200, 250), diverging, t0=T1)))
        assert "divergence" in kinds(relapse, "raised")
        assert (await store.get_run("r")).health != "ok"
        # the same run-away raises the same alert id: its notification is claimed (sent) again
        again_ids = {a["id"] for a in relapse.alerts if a["kind"] == "divergence"}
        assert again_ids & {a["id"] for a in blew.alerts}
        assert [a["attempt"] for a in relapse.alerts] == [2] * len(relapse.alerts)
        assert {a["id"] for a in relapse.notify} >= again_ids

    asyncio.run(go())


def test_a_batch_sent_again_after_the_rewind_stays_duplicates(store) -> None:
    """A batch whose answer was lost is sent again, after the rewind's metadata: the same records
    (same ts) are duplicates of the attempt that holds them, and begin nothing."""
    p = IngestPipeline(store)

    async def go():
        await p.put_meta("r", {"checkpoints": [{"step": 100}]})
        await p.ingest("r", cols_of(recs(range(200))))
        await p.ingest("r", cols_of(recs(range(200, 240), diverging)))
        await p.put_meta("r", {"checkpoints": [{"step": 100}], "rewinds": [{"to_step": 100, "at_step": 239}]})
        res = await p.ingest("r", cols_of(recs(range(200, 240), diverging)))
        assert (res.accepted, res.duplicates) == (0, 40)
        assert (await store.get_run("r")).attempt == 1
        res = await p.ingest("r", cols_of(recs(range(100, 120), t0=T1)))
        assert (res.accepted, res.duplicates) == (20, 0)
        s = await store.get_run("r")
        assert (s.attempt, s.n_steps) == (2, 260)
        # the metadata sent again (a later checkpoint) brings no new rewind
        await p.put_meta("r", {"checkpoints": [{"step": 100}, {"step": 120}],
                               "rewinds": [{"to_step": 100, "at_step": 239}]})
        res = await p.ingest("r", cols_of(recs(range(120, 130), t0=T1)))
        assert (res.accepted, (await store.get_run("r")).attempt) == (10, 2)
        # a step below the attempt's start belongs to the earlier one: a duplicate, not stored again
        res = await p.ingest("r", cols_of(recs(range(95, 100), t0=T1)))
        assert (res.accepted, res.duplicates) == (0, 5)
        assert len(await store.read_series("r", attempt=2)) == 30

    asyncio.run(go())


def test_a_rewind_whose_run_went_on_instead_begins_nothing(store) -> None:
    """A rewind marked but not followed (the next records go past its at_step): dropped, so the
    run's timeline is not rewritten with every later batch, and a later repeat is a duplicate."""
    p = IngestPipeline(store)

    async def go():
        await p.ingest("r", cols_of(recs(range(240))))
        await p.put_meta("r", {"rewinds": [{"to_step": 100, "at_step": 239}]})
        res = await p.ingest("r", cols_of(recs(range(240, 260))))
        assert res.accepted == 20
        assert Timeline.from_bytes((await store.load("default", "r")).timeline).pending is None
        res = await p.ingest("r", cols_of(recs(range(100, 110), t0=T1)))
        assert (res.accepted, res.duplicates) == (0, 10)
        assert (await store.get_run("r")).attempt == 1

    asyncio.run(go())


def test_a_rewind_to_a_step_without_a_checkpoint_starts_the_detectors_over(store) -> None:
    p = IngestPipeline(store)

    async def go():
        await p.ingest("r", cols_of(recs(range(200))))
        blew = await p.ingest("r", cols_of(recs(range(200, 250), diverging)))
        assert "divergence" in kinds(blew, "raised")
        await p.put_meta("r", {"rewinds": [{"to_step": 150, "at_step": 249}]})
        res = await p.ingest("r", cols_of(recs(range(150, 200), t0=T1)))
        assert res.accepted == 50 and "divergence" in kinds(res, "resolved")
        assert res.health == "ok"
        relapse = await p.ingest("r", cols_of(recs(range(200, 260), diverging, t0=T1)))
        assert "divergence" in kinds(relapse, "raised")
        assert_same_series(await store.read_series("r", attempt=1),
                           cols_of(recs(range(200)) + recs(range(200, 250), diverging)))

    asyncio.run(go())


def test_each_attempt_is_downsampled_apart_and_both_stores_agree(redis_proc) -> None:
    """A long second attempt leaves the raw window (one chunk here) and is downsampled in its own
    series; the first attempt's steps stay as they were; both stores answer the same."""
    stores = [MemoryStore(raw_chunks=1), RedisStore(redis_proc.url, raw_chunks=1)]
    first = recs(range(3000))
    second = recs(range(1000, 6000), lambda s: healthy(s) * 0.9, t0=T1)

    async def go():
        out = []
        for st in stores:
            p = IngestPipeline(st)
            for k in range(0, 3000, 500):
                await p.ingest("long", cols_of(first[k:k + 500]))
            await p.put_meta("long", {"rewinds": [{"to_step": 1000, "at_step": 2999}]})
            for k in range(0, 5000, 500):
                res = await p.ingest("long", cols_of(second[k:k + 500]))
                assert res.accepted == 500
            out.append([await st.read_series("long", attempt=a) for a in (1, 2, None)])
            await st.close()
        return out

    mem, red = asyncio.run(go())
    for x, y in zip(mem, red):
        assert_same_series(x, y)
    a1, a2, timeline = red
    assert len(a2) < 5000 and a2.step[-1] == 5999          # downsampled below its raw window
    assert any(e and "ds_width" in e for e in a2.extra)
    assert a1.step[-1] == 2999 and timeline.step[-1] == 5999
    assert max(s for s, e in zip(timeline.step, timeline.extra) if not e or s < 1000) <= 5999


def test_every_key_of_a_later_attempt_gets_a_ttl(redis_proc) -> None:
    st = RedisStore(redis_proc.url, retention_seconds=3600, raw_chunks=1)
    p = IngestPipeline(st)

    async def go():
        await p.ingest("ttl", cols_of(recs(range(2000))))
        await p.put_meta("ttl", {"rewinds": [{"to_step": 10, "at_step": 1999}]})
        await p.ingest("ttl", cols_of(recs(range(10, 2500), t0=T1)))
        await p.put_meta("ttl", {"rewinds": [{"to_step": 10, "at_step": 1999}], "task": "x"})
        await st.close()

    asyncio.run(go())
    r = redis_proc.client()
    keys = r.keys("lw:{default/ttl}:att2:*")
    assert {k.decode().rsplit(":", 1)[-1] for k in keys} >= {"ds", "rc", "d1"}
    assert any(b":raw:" in k for k in keys)
    assert all(0 < r.ttl(k) <= 3600 + 360 for k in r.keys("lw:{default/ttl}:*"))


def test_the_timeline_keeps_the_last_checkpoint_states_and_reads_new_rewinds_once() -> None:
    tl = Timeline()
    for s in range(12):
        tl.keep(s * 10, b"state %d" % s)
    assert sorted(tl.states) == [s * 10 for s in range(4, 12)]
    r = [{"to_step": 10, "at_step": 20}]
    assert tl.new_rewinds({"rewinds": r}) == r
    assert tl.new_rewinds({"rewinds": r}) == []                          # sent again: nothing new
    assert tl.new_rewinds({"rewinds": r + r}) == r                       # the same rollback twice
    window = [{"to_step": k, "at_step": k + 1} for k in range(8)]
    tl.new_rewinds({"rewinds": window})
    assert tl.new_rewinds({"rewinds": window[1:] + [{"to_step": 9, "at_step": 9}]}) == [{"to_step": 9, "at_step": 9}]
    assert Timeline.from_bytes(tl.to_bytes()) == tl
    assert timeline_spans([{"attempt": 1, "start": None}, {"attempt": 2, "start": 0}], None, None) == \
        [(2, 0, None)]
    # a rewind to 100: the state there; the later checkpoints the run still names are waited for again
    tl = Timeline()
    for s in (0, 100, 200):
        tl.keep(s, b"at %d" % s)
    tl.pending = {"to_step": 120, "at_step": 250, "ts": None}
    assert tl.begin(120, 250, {"checkpoints": [{"step": 0}, {"step": 100}, {"step": 200}]}) == b"at 100"
    assert (sorted(tl.states), tl.due, tl.attempt, tl.pending) == ([0, 100], [200], 2, None)


# --- through the service ----------------------------------------------------------------------

@pytest.fixture(params=["memory", "redis"])
def service(request, service_factory):
    env = {}
    if request.param == "redis":
        env["LOSSWATCH_STORE"] = request.getfixturevalue("redis_proc").url
    return service_factory(env=env)


def test_a_client_that_rolls_back_gets_a_new_attempt_through_the_service(service, monkeypatch) -> None:
    """A real Monitor: checkpoints, a run-away, the rewind the Actor marks after restoring the
    checkpoint, the loop logging again from there: the service keeps both attempts, hands the
    client the run-away's alert resolved, and raises it again on a relapse."""
    from losswatch.client import Monitor

    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    resolved: list[dict] = []
    with Monitor(run_id="rb", url=service.url, flush_interval=3600) as mon:
        for s in range(250):
            if s in (0, 100):
                mon.checkpoint(s, {"tag": s})
            mon.log(s, loss=diverging(s), grad_norm=1.0, lr=0.1)
        assert mon.flush(30)
        assert any(a["kind"] == "divergence" and a.get("resolved_step") is None for a in mon.alerts)
        mon.mark_rewind(100, 250)
        mon.log(250, loss=diverging(250), grad_norm=1.0, lr=0.1)   # the step the rollback ran in
        for s in range(100, 180):
            mon.log(s, loss=healthy(s), grad_norm=1.0, lr=0.01)
        assert mon.flush(30)
        resolved = [a for a in mon.alerts if a["kind"] == "divergence"]
        assert resolved and all(a.get("resolved_step") is not None for a in resolved)

        with client(service.url) as c:
            run = c.get("/v1/runs/rb").json()
            assert (run["attempt"], run["n_steps"], run["duplicates"]) == (2, 331, 0)
            assert run["attempts"][1] == {"attempt": 2, "start": 100, "rewound_at": 250}
            one = get_json(service.url, "/v1/runs/rb/steps?attempt=1")["series"]
            two = get_json(service.url, "/v1/runs/rb/steps?attempt=2")["series"]
            now = get_json(service.url, "/v1/runs/rb/steps")["series"]
            assert one["step"] == list(range(251)) and two["step"] == list(range(100, 180))
            assert now["step"] == list(range(180)) and num(now["lr"][150]) == 0.01
            assert num(one["lr"][150]) == 0.1
            # the last re-logged batch posted again is still duplicates
            again = post_records(c, "rb", [{"step": s, "loss": num(two["loss"][k]), "lr": 0.01,
                                            "grad_norm": 1.0, "ts": two["ts"][k]}
                                           for k, s in enumerate(two["step"][-10:], len(two["step"]) - 10)])
            assert again.json()["duplicates"] == 10 and again.json()["accepted"] == 0
            assert c.get("/v1/runs/rb/steps", params={"attempt": 0}).status_code == 422
        # the export writes the timeline, or one attempt
        for extra, steps in (((), list(range(180))), (("--attempt", "1"), list(range(251)))):
            res = losswatch("export", "rb", "--url", service.url, "--format", "jsonl", *extra)
            assert res.returncode == 0, res.stderr
            assert [json.loads(line)["step"] for line in res.stdout.splitlines()] == steps

        # the relapse: the run-away again, from the same checkpoint's detector state
        for s in range(180, 260):
            mon.log(s, loss=diverging(s), grad_norm=1.0, lr=0.01)
        assert mon.flush(30)
        open_now = [a for a in mon.alerts if a["kind"] == "divergence" and a.get("resolved_step") is None]
        assert open_now


def test_bad_checkpoints_or_rewinds_in_the_metadata_are_refused(service_proc) -> None:
    with client(service_proc) as c:
        for bad in ({"checkpoints": [{"step": -1}]}, {"rewinds": [{"to_step": 5}]},
                    {"rewinds": [{"to_step": "x", "at_step": 3}]}, {"checkpoints": "none"}):
            r = c.put("/v1/runs/bad-meta", json=bad)
            assert r.status_code == 422, (bad, r.text)
        assert c.get("/v1/runs/bad-meta").status_code == 404


def test_the_actor_rolls_back_through_the_service_and_verifies_on_the_new_attempt(service, monkeypatch) -> None:
    """The whole loop: a real Monitor with act=True and an on_rollback that moves the loop back;
    the service's advice for the run-away makes the Actor roll back to the checkpoint before it,
    the loop logs those steps again, healthy, and the service's verdict follows the new attempt."""
    torch = pytest.importorskip("torch")
    from losswatch.client import Monitor

    monkeypatch.delenv("LOSSWATCH_URL", raising=False)
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    rolled: list[tuple[int, object]] = []
    step = 0

    def on_rollback(to_step: int, checkpoint: object) -> None:
        nonlocal step
        rolled.append((to_step, checkpoint))
        step = to_step

    # the run-away ignores the LR: the cut fails its verification and the ladder rolls back
    with Monitor(run_id="actor-rb", url=service.url, act=True, optimizer=opt, on_rollback=on_rollback,
                 flush_interval=3600, actor_options={"verify_records": 10, "verify_steps": 10}) as mon:
        logged = 0
        while step < 320 and logged < 2000:
            if step % 50 == 0:
                mon.checkpoint(step, {"tag": step})
            n = len(rolled)
            mon.log(step, loss=healthy(step) if rolled else diverging(step), grad_norm=1.0,
                    lr=opt.param_groups[0]["lr"])
            logged += 1
            if len(rolled) == n:
                step += 1
            if logged % 10 == 0:
                assert mon.flush(30)      # the service's advice reaches the Actor with the answer
        assert mon.flush(30)
        assert rolled and rolled[0][0] <= 200, (rolled, [o.to_dict() for o in mon.actor.history][-5:])
        to_step = rolled[0][0]
        run = get_json(service.url, "/v1/runs/actor-rb")
        assert run["attempt"] == 1 + len(rolled) and run["attempts"][1]["start"] == to_step
        assert run["health"] == "ok" and run["last_step"] == 319
        divergence = [a for a in mon.alerts if a["kind"] == "divergence"]
        assert divergence and all(a.get("resolved_step") is not None for a in divergence)
        first = get_json(service.url, "/v1/runs/actor-rb/steps?attempt=1")["series"]["step"]
        assert first[0] == 0 and first[-1] > 200          # the run-away is still there, in attempt 1
        now = get_json(service.url, "/v1/runs/actor-rb/steps")["series"]
        assert now["step"] == list(range(320))
        assert all(num(v) == healthy(s) for s, v in zip(now["step"], now["loss"]) if s >= to_step)
        # the cut failed (the loss kept running away from its level before the incident); the
        # rollback (with its LR cut) is judged on the new attempt's records: verified, and
        # nothing more was done (the service's alert went with the steps that raised it)
        mon.actor.finish()
        verdicts = [o.verdict.value for o in mon.actor.verdicts]
        assert verdicts == ["failed", "verified"], [o.to_dict() for o in mon.actor.history]
        assert [o.action["type"] for o in mon.actor.history if o.status.value == "applied" and o.verdict is None] \
            == ["scale_lr", "rollback", "scale_lr"]
