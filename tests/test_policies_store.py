"""/v1/policies on the service's store: replicas on one Redis serve the same policies, projects
stay apart, Redis down is a 503, and the answers are the same bytes on either store."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx

from losswatch.service.lr.policy_db import SEED_RECIPES

TASK = {"model_family": "mlp", "dataset": "digits", "optimizer": "sgd", "batch_size": 32}
TOKENS = "ta=projA;tb=projB"
A, B = {"Authorization": "Bearer ta"}, {"Authorization": "Bearer tb"}


def _entry(lr, final, steps, **kw):
    return {**TASK, "policy": {"name": "cosine", "lr": lr, "total_steps": steps}, "final_metric": final,
            "steps": steps, **kw}


def test_two_replicas_on_one_redis_serve_the_same_policies(redis_proc, service_factory, tmp_path):
    env = {"LOSSWATCH_STORE": redis_proc.url, "LOSSWATCH_TOKENS": TOKENS,
           "LOSSWATCH_POLICY_DB": str(tmp_path / "unused.sqlite")}
    one, two = service_factory(env=env), service_factory(env=env)
    with httpx.Client(base_url=one.url, timeout=10) as c1, httpx.Client(base_url=two.url, timeout=10) as c2:
        r = c1.post("/v1/policies", json={"entries": [_entry(0.1, 0.3, 1000), _entry(0.2, 0.2, 2000)]}, headers=A)
        assert r.status_code == 201
        added = r.json()["added"]
        # the seeded recipes keep ids 1..N; written entries come after them
        assert [e["id"] for e in added] == [len(SEED_RECIPES) + 1, len(SEED_RECIPES) + 2]
        assert c2.get("/v1/policies", params=TASK, headers=A).json()["policies"] == added
        assert c2.get(f"/v1/policies/{added[0]['id']}", headers=A).json() == added[0]
        assert c2.get("/v1/policies/best", params={**TASK, "max_steps": 1500}, headers=A).json() == added[0]
        # another project's token sees nothing of it on either replica, and cannot delete it
        for c in (c1, c2):
            assert c.get(f"/v1/policies/{added[0]['id']}", headers=B).status_code == 404
            assert c.delete(f"/v1/policies/{added[0]['id']}", headers=B).status_code == 404
            assert c.get("/v1/policies", params=TASK, headers=B).json()["policies"] == []
            assert c.get("/v1/policies/best", params=TASK, headers=B).status_code == 404
        assert len(c1.get("/v1/policies", params=TASK, headers=A).json()["policies"]) == 2
        # a delete through one replica is gone on the other
        assert c2.delete(f"/v1/policies/{added[0]['id']}", headers=A).status_code == 200
        assert c1.get(f"/v1/policies/{added[0]['id']}", headers=A).status_code == 404
        assert c1.get("/v1/policies", params=TASK, headers=A).json()["policies"] == added[1:]
        # seeds: served by both, read-only, and not written into Redis
        seeds = c1.get("/v1/policies", params={"source": "seed"}, headers=B).json()["policies"]
        assert seeds == c2.get("/v1/policies", params={"source": "seed"}, headers=A).json()["policies"]
        assert len(seeds) == len(SEED_RECIPES)
        assert c2.delete(f"/v1/policies/{seeds[0]['id']}", headers=A).status_code == 403
    keys = sorted(k.decode() for k in redis_proc.client().keys("lw:policies:*"))
    assert keys == ["lw:policies:{#}:next", "lw:policies:{#}:owners", "lw:policies:{projA}"]


def test_concurrent_writes_through_two_replicas_get_distinct_ids(redis_proc, service_factory):
    env = {"LOSSWATCH_STORE": redis_proc.url, "LOSSWATCH_TOKENS": TOKENS}
    urls = [service_factory(env=env).url for _ in range(2)]

    def post(i: int) -> list[int]:
        headers = A if i % 2 else B
        r = httpx.post(f"{urls[i % 2]}/v1/policies", json={"entries": [_entry(0.01 * (i + 1), 0.5, 100)] * 3},
                       headers=headers, timeout=10)
        assert r.status_code == 201, r.text
        return [e["id"] for e in r.json()["added"]]

    with ThreadPoolExecutor(8) as pool:
        ids = [i for got in pool.map(post, range(16)) for i in got]
    assert len(set(ids)) == len(ids) == 48 and min(ids) > len(SEED_RECIPES)
    listed = {e["id"] for h in (A, B) for e in httpx.get(f"{urls[0]}/v1/policies", params=TASK, headers=h,
                                                          timeout=10).json()["policies"]}
    assert listed == set(ids)


def test_redis_down_is_a_503_with_retry_after_and_nothing_is_lost(redis_factory, service_factory):
    redis = redis_factory(appendonly=True)
    svc = service_factory(env={"LOSSWATCH_STORE": redis.url, "LOSSWATCH_TOKENS": TOKENS})
    with httpx.Client(base_url=svc.url, timeout=10) as c:
        eid = c.post("/v1/policies", json=_entry(0.1, 0.3, 100), headers=A).json()["added"][0]["id"]
        redis.kill9()
        for method, path, kw in (("GET", "/v1/policies", {}), ("GET", "/v1/policies/best", {"params": TASK}),
                                 ("GET", f"/v1/policies/{eid}", {}), ("DELETE", f"/v1/policies/{eid}", {}),
                                 ("POST", "/v1/policies", {"json": _entry(0.2, 0.1, 100)})):
            r = c.request(method, path, headers=A, **kw)
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            assert int(r.headers["Retry-After"]) >= 1 and "store unavailable" in r.json()["detail"]
        redis.start()
        assert c.get(f"/v1/policies/{eid}", headers=A).json()["final_metric"] == 0.3
        assert [e["id"] for e in c.get("/v1/policies", params=TASK, headers=A).json()["policies"]] == [eid]


def _session(url: str) -> list[bytes]:
    """One sequence of requests; every answer's bytes (entries carry created_at: comparable)."""
    out = []
    with httpx.Client(base_url=url, timeout=10) as c:
        def call(method, path, headers=A, **kw):
            r = c.request(method, path, headers=headers, **kw)
            out.append(f"{r.status_code} ".encode() + r.content)

        call("POST", "/v1/policies", json={"entries": [_entry(0.1, 0.3, 1000, created_at=1.5e9),
                                                       _entry(0.2, 0.2, 2000, created_at=1.6e9)]})
        call("POST", "/v1/policies", json=_entry(0.3, None, 500, created_at=1.7e9, diverged=True), headers=B)
        for h in (A, B):
            call("GET", "/v1/policies", headers=h)
            call("GET", "/v1/policies", params={**TASK, "model_family": "MLP", "max_steps": 1500}, headers=h)
            call("GET", "/v1/policies/best", params=TASK, headers=h)
            call("GET", "/v1/policies/best", params={"model_family": "gpt2-124m"}, headers=h)
        call("GET", f"/v1/policies/{len(SEED_RECIPES) + 1}", headers=B)
        call("DELETE", f"/v1/policies/{len(SEED_RECIPES) + 1}", headers=B)
        call("DELETE", "/v1/policies/1")
        call("DELETE", f"/v1/policies/{len(SEED_RECIPES) + 1}")
        call("GET", "/v1/policies", params={"limit": 3, "source": "user"})
    return out


def test_the_answers_are_the_same_bytes_on_either_store(redis_proc, service_factory):
    mem = service_factory(env={"LOSSWATCH_TOKENS": TOKENS})
    red = service_factory(env={"LOSSWATCH_STORE": redis_proc.url, "LOSSWATCH_TOKENS": TOKENS})
    assert _session(mem.url) == _session(red.url)


def test_policies_on_a_redis_cluster(redis_cluster):
    from losswatch.service.lr.policy_db import PolicyEntry
    from losswatch.service.stores.redis import RedisStore

    async def go():
        store = RedisStore(redis_cluster.url, prefix="lwpol:")
        try:
            pol = store.policies
            a = await pol.add_many([PolicyEntry.from_dict({**_entry(0.1, 0.3, 10), "project": "pa"})])
            b = await pol.add_many([PolicyEntry.from_dict({**_entry(lr, 0.2, 10), "project": "pb"}) for lr in (0.2, 0.3)])
            assert len({e.id for e in a + b}) == 3
            assert [e.id for e in await pol.list(projects=frozenset(["pb"]), **TASK)] == [e.id for e in b]
            assert (await pol.best(projects=None, **TASK)).id == b[0].id
            assert await pol.get(a[0].id, projects=frozenset(["pb"])) is None
            assert not await pol.delete(a[0].id, projects=frozenset(["pb"]))
            assert await pol.delete(a[0].id, projects=frozenset(["pa"]))
            assert await pol.list(projects=frozenset(["pa"]), **TASK) == []
        finally:
            await store.close()

    asyncio.run(go())


def test_the_service_answers_as_the_sqlite_file_does(tmp_path):
    """The same writes into the CLI's file and into the memory store's policies: every query
    answers the same entries (the seeds' created_at aside: the file stamps its seeding time)."""
    from losswatch.service.lr.policy_db import PolicyDB, PolicyEntry
    from losswatch.service.lr.policy_store import MemoryPolicies

    writes = [(_entry(0.1, 0.3, 1000), "pa"), (_entry(0.2, 0.2, 2000, diverged=True), "pa"),
              ({**_entry(0.3, None, 500), "model_family": "MLP", "best_metric": 0.25}, "pb"),
              ({**TASK, "policy": {"name": "constant", "lr": 0.5}, "metric": "acc", "mode": "max",
                "final_metric": 0.9}, "pb")]
    queries = [{}, TASK, {"model_family": "Mlp", "max_steps": 1000}, {"policy_name": "constant"},
               {"metric": "acc"}, {"source": "seed"}, {"model_family": "gpt2-124m"}, {"include_diverged": False}]
    scopes = [None, frozenset(["pa"]), frozenset(["pb"]), frozenset(["pa", "pb"]), frozenset(["nobody"])]

    def plain(e):
        return None if e is None else {**e.to_dict(), "created_at": None}

    async def go():
        db, mem = PolicyDB(str(tmp_path / "p.sqlite")), MemoryPolicies()
        for d, project in writes:
            db.add_many([PolicyEntry.from_dict({**d, "project": project, "created_at": 1.0})])
            await mem.add_many([PolicyEntry.from_dict({**d, "project": project, "created_at": 1.0})])
        for q in queries:
            for projects in scopes:
                assert [plain(e) for e in db.list(projects=projects, **q)] == \
                    [plain(e) for e in await mem.list(projects=projects, **q)], (q, projects)
                assert plain(db.best(projects=projects, **q)) == plain(await mem.best(projects=projects, **q))
                assert [plain(e) for e in db.list(limit=2, projects=projects, **q)] == \
                    [plain(e) for e in await mem.list(limit=2, projects=projects, **q)]
        for i in range(1, len(SEED_RECIPES) + len(writes) + 2):
            for projects in scopes:
                assert plain(db.get(i, projects)) == plain(await mem.get(i, projects)), (i, projects)
        db.close()

    asyncio.run(go())
