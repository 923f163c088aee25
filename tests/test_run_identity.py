"""A run is named by (project, run_id): two projects using the same run id keep two runs that never
learn of each other. Real HTTP against ``losswatch serve`` on both stores (memory, a real Redis)."""

from __future__ import annotations

import asyncio

import pytest

from losswatch.service.stores.redis import RedisStore
from service_helpers import client, post_records
from test_redis_store import assert_same_series, cols_of, curve, pipe

TOKENS = "tokA=projA;tokB=projB;tokAB=projA,projB"
STOP = {"step": 290, "action": {"type": "stop", "reason": "diverging"}, "applied": True}


def records(n: int, **troubles) -> list[dict]:
    """Steps with loss, grad-norm and LR only (the wire form a client sends)."""
    return [{k: r[k] for k in ("step", "loss", "grad_norm", "lr")} for r in curve(n, **troubles)]


@pytest.fixture
def secured(store_env, service_factory):
    return service_factory(env={**store_env, "LOSSWATCH_TOKENS": TOKENS, "LOSSWATCH_HOST": "127.0.0.1"}).url


@pytest.fixture
def open_service(store_env, service_factory):
    return service_factory(env=store_env).url


def test_two_projects_keep_their_own_run_of_the_same_id(secured):
    a, b, ab = client(secured, "tokA"), client(secured, "tokB"), client(secured, "tokAB")
    hot, calm = records(400, seed=1, diverge_at=300), records(120, seed=2)
    # A creates x first; B's writes to x are never refused: they go to B's own run x
    assert a.put("/v1/runs/x", json={"task": "a-task"}).status_code == 200
    for i in range(0, len(hot), 100):
        assert post_records(a, "x", hot[i:i + 100]).status_code == 200
    assert b.put("/v1/runs/x", json={"task": "b-task"}).status_code == 200
    for i in range(0, len(calm), 40):
        r = post_records(b, "x", calm[i:i + 40])
        assert r.status_code == 200 and r.json()["accepted"] == 40
    assert a.post("/v1/runs/x/actions", json=STOP).status_code == 201

    run_a, run_b = a.get("/v1/runs/x").json(), b.get("/v1/runs/x").json()
    assert (run_a["project"], run_a["n_steps"], run_a["meta"]) == ("projA", 400, {"task": "a-task"})
    assert (run_b["project"], run_b["n_steps"], run_b["meta"]) == ("projB", 120, {"task": "b-task"})
    assert run_a["health"] == "critical" and run_b["health"] == "ok"
    steps_a, steps_b = a.get("/v1/runs/x/steps").json(), b.get("/v1/runs/x/steps").json()
    assert steps_a["project"] == "projA" and steps_a["series"]["step"] == list(range(400))
    assert steps_b["series"]["loss"] == pytest.approx([r["loss"] for r in calm])

    alerts_a, alerts_b = a.get("/v1/runs/x/alerts").json(), b.get("/v1/runs/x/alerts").json()
    assert alerts_a["alerts"] and {x["project"] for x in alerts_a["alerts"]} == {"projA"}
    assert [x["action"]["type"] for x in alerts_a["actions"]] == ["stop"]
    assert alerts_a["actions"][0]["project"] == "projA"
    assert alerts_b == {"run_id": "x", "project": "projB", "alerts": [], "actions": []}

    # B cannot touch A's alert: its acknowledgement answers as for an alert that does not exist
    aid = alerts_a["alerts"][0]["id"]
    theirs, nothing = b.post(f"/v1/alerts/{aid}/ack"), b.post("/v1/alerts/x:nan:123456/ack")
    assert theirs.status_code == nothing.status_code == 404
    assert not next(x for x in a.get("/v1/runs/x/alerts").json()["alerts"] if x["id"] == aid).get("acknowledged")
    assert a.post(f"/v1/alerts/{aid}/ack").json()["acknowledged"] is True

    # listings show the project of each run and alert, and only the token's projects
    listed = ab.get("/v1/runs").json()["runs"]
    assert sorted((r["run_id"], r["project"], r["n_steps"]) for r in listed) == \
        [("x", "projA", 400), ("x", "projB", 120)]
    assert [(r["run_id"], r["project"]) for r in b.get("/v1/runs").json()["runs"]] == [("x", "projB")]
    assert b.get("/v1/alerts").json()["alerts"] == []
    assert {x["project"] for x in ab.get("/v1/alerts").json()["alerts"]} == {"projA"}
    metrics = ab.get("/metrics").text
    assert 'losswatch_run_step{project="projA",run="x"} 399.0' in metrics
    assert 'losswatch_run_step{project="projB",run="x"} 119.0' in metrics
    assert 'project="projA"' not in b.get("/metrics").text


def test_a_run_of_another_project_answers_as_one_that_does_not_exist(secured):
    """No 404-against-200 oracle: B's answers for A's run id are those for an unused id."""
    a, b = client(secured, "tokA"), client(secured, "tokB")
    assert post_records(a, "only-a", records(30)).status_code == 200
    assert a.post("/v1/runs/only-a/actions", json=STOP).status_code == 201
    for suffix in ("", "/steps", "/alerts"):
        taken, free = b.get(f"/v1/runs/only-a{suffix}"), b.get(f"/v1/runs/never-used{suffix}")
        assert taken.status_code == free.status_code == 404, suffix
        assert taken.json()["detail"].replace("only-a", "never-used") == free.json()["detail"]
    taken = b.post("/v1/runs/only-a/actions", json=STOP)
    free = b.post("/v1/runs/never-used/actions", json=STOP)
    assert taken.status_code == free.status_code == 404
    # and B's first write creates B's own run, leaving A's as it was
    assert post_records(b, "only-a", records(5)).json()["accepted"] == 5
    assert (a.get("/v1/runs/only-a").json()["n_steps"], b.get("/v1/runs/only-a").json()["n_steps"]) == (30, 5)


def test_a_token_of_several_projects_must_name_one(secured):
    a, ab = client(secured, "tokA"), client(secured, "tokAB")
    assert post_records(client(secured, "tokB"), "y", records(10)).status_code == 200
    for r in (post_records(ab, "y", records(3)), ab.put("/v1/runs/y", json={"task": "t"}),
              ab.get("/v1/runs/y"), ab.get("/v1/runs/y/steps"), ab.get("/v1/runs/y/alerts"),
              ab.post("/v1/runs/y/actions", json=STOP), ab.post("/v1/alerts/y:nan:1/ack")):
        assert r.status_code == 422 and "several projects" in r.text, (r.request.url, r.text)
    # named in the query or the body, it acts in that project
    assert ab.get("/v1/runs/y", params={"project": "projB"}).json()["n_steps"] == 10
    assert post_records(ab, "y", records(15)[10:], project="projB").json()["accepted"] == 5
    body = '{"project": "projB", "records": [{"step": 15, "loss": 1.0}]}'
    r = ab.post("/v1/runs/y/steps", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert ab.put("/v1/runs/y", json={"project": "projB", "task": "t"}).json()["n_steps"] == 16
    # the query and the body must agree; a project the token does not cover is refused
    r = ab.post("/v1/runs/y/steps", content=body, params={"project": "projA"},
                headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "disagree" in r.text
    assert a.get("/v1/runs/y", params={"project": "projB"}).status_code == 403
    assert post_records(a, "y", records(3), project="projB").status_code == 403
    # nothing of the refused requests was stored anywhere
    assert ab.get("/v1/runs/y", params={"project": "projB"}).json()["n_steps"] == 16
    assert ab.get("/v1/runs/y", params={"project": "projA"}).status_code == 404


def test_with_auth_off_a_run_is_in_default_or_the_project_named(open_service):
    c = client(open_service)
    assert post_records(c, "z", records(10)).json()["accepted"] == 10
    assert post_records(c, "z", records(4), project="team").json()["accepted"] == 4
    assert c.put("/v1/runs/z", params={"project": "team"}, json={"task": "t"}).json()["n_steps"] == 4
    assert c.get("/v1/runs/z").json()["project"] == "default"
    assert c.get("/v1/runs/z", params={"project": "default"}).json()["n_steps"] == 10
    team = c.get("/v1/runs/z", params={"project": "team"}).json()
    assert (team["project"], team["n_steps"], team["meta"]) == ("team", 4, {"task": "t"})
    assert sorted((r["project"], r["n_steps"]) for r in c.get("/v1/runs").json()["runs"]) == \
        [("default", 10), ("team", 4)]
    assert [r["project"] for r in c.get("/v1/runs", params={"project": "team"}).json()["runs"]] == ["team"]
    assert c.get("/v1/runs/z", params={"project": "nobody"}).status_code == 404


def test_the_client_reaches_its_run_with_a_token_of_several_projects(service_factory):
    from losswatch.client import Monitor

    url = service_factory(env={"LOSSWATCH_TOKENS": TOKENS, "LOSSWATCH_HOST": "127.0.0.1"}).url
    with Monitor(run_id="cl", url=url, project="projB", token="tokAB", meta={"model": "m"}) as mon:
        for r in records(50):
            mon.log(r["step"], loss=r["loss"], grad_norm=r["grad_norm"], lr=r["lr"])
        mon.report_action(49, {"type": "stop", "reason": "done"}, applied=True)
        assert mon.flush(20)
        assert mon.stats["rejected"] == 0 and mon.stats["sent"] == 50
    b = client(url, "tokB")
    run = b.get("/v1/runs/cl").json()
    assert (run["n_steps"], run["meta"]["model"]) == (50, "m")
    assert [x["action"]["type"] for x in b.get("/v1/runs/cl/alerts").json()["actions"]] == ["stop"]
    assert client(url, "tokA").get("/v1/runs/cl").status_code == 404


def test_runs_of_the_earlier_redis_layout_move_into_their_project(redis_proc):
    """Data written when a run was named by its run id alone (keys ``lw:{<run_id>}:``, bare ids
    in the indexes) is renamed into its project by ``prepare``, once, and reads back whole."""
    cli = redis_proc.client()
    recs = curve(3000, seed=3, diverge_at=2900)

    async def go():
        st = RedisStore(redis_proc.url)
        try:
            await st.prepare()                                 # a fresh Redis: the current layout
            await pipe(st).put_meta("old", {"task": "t"}, project="team")
            await pipe(st).ingest("old", cols_of(recs), project="team")
            await st.record_action("old", {"step": 5}, project="team")
            want_run = await st.get_run("old", project="team")
            want_series = await st.read_series("old", project="team")
            want_alerts = await st.list_alerts(run_id="old", project="team")
            assert want_alerts
            # what the earlier layout left: the same data under the run id alone
            for key in cli.keys("lw:{team/old}:*"):
                cli.rename(key, key.replace(b"{team/old}", b"{old}"))
            for index in ("lw:runs", "lw:alerts"):          # one sorted set each, of bare ids
                for shard in cli.keys(index + ":{*}"):
                    for member, score in cli.zrange(shard, 0, -1, withscores=True):
                        cli.zadd(index, {member.split(b"/", 1)[1]: score})
                    cli.delete(shard)
            cli.set("lw:layout", "2")
            st2 = RedisStore(redis_proc.url)
            try:
                assert await st2.get_run("old", project="team") is None   # not visible before
                await st2.prepare()
                assert cli.get("lw:layout") == b"4" and cli.keys("lw:{old}:*") == []
                assert cli.exists("lw:runs", "lw:alerts") == 0          # moved into the shards
                got = await st2.get_run("old", project="team")
                assert (got.project, got.n_steps, got.meta, got.health) == \
                       ("team", want_run.n_steps, {"task": "t"}, want_run.health)
                assert_same_series(await st2.read_series("old", project="team"), want_series)
                assert sorted(a["id"] for a in await st2.list_alerts(run_id="old", project="team")) == \
                       sorted(a["id"] for a in want_alerts)
                assert {a["project"] for a in await st2.list_alerts()} == {"team"}
                assert await st2.list_actions("old", project="team") == [{"step": 5}]
                assert [(s.project, s.run_id) for s in await st2.list_runs()] == [("team", "old")]
                # the run goes on where it stopped
                more = [dict(r, step=r["step"] + 3000) for r in curve(10, seed=4)]
                assert (await pipe(st2).ingest("old", cols_of(more), project="team")).accepted == 10
                assert (await st2.get_run("old", project="team")).n_steps == want_run.n_steps + 10
            finally:
                await st2.close()
        finally:
            await st.close()

    asyncio.run(go())
