"""The LR policy database: the SQLite store, `losswatch policies` (real subprocess) and
/v1/policies through a real service process, on the memory store and on a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from losswatch.service.lr.policy_db import SEED_RECIPES, PolicyDB

TASK = {"model_family": "mlp", "dataset": "digits", "optimizer": "sgd", "batch_size": 32}


def _entry(lr, final, steps, diverged=False, **kw):
    return {**TASK, "policy": {"name": "cosine", "lr": lr, "total_steps": steps}, "final_metric": final,
            "steps": steps, "diverged": diverged, **kw}


@pytest.fixture
def db(tmp_path):
    d = PolicyDB(str(tmp_path / "p.sqlite"))
    yield d
    d.close()


def test_seeded_once_with_the_well_known_recipes(tmp_path, db):
    seeds = db.list(source="seed")
    assert len(seeds) == len(SEED_RECIPES)
    alpaca = db.best(model_family="llama-7b")
    assert alpaca.policy["lr"] == 2e-5 and alpaca.policy["warmup_ratio"] == 0.03
    assert db.best(model_family="RESNET-50").policy["milestones"] == [30, 60, 90]  # case-insensitive
    gpt2 = db.best(model_family="gpt2-124m", optimizer="adamw")
    assert gpt2.policy["name"] == "warmup_cosine" and gpt2.policy["lr"] == 6e-4
    bert = db.list(model_family="bert-base")
    assert sorted(e.policy["lr"] for e in bert) == [2e-5, 3e-5, 5e-5]
    assert {e.policy["name"] for e in bert} == {"warmup_linear"}
    # deleting a seed does not bring it back on reopen
    assert db.delete(alpaca.id)
    db.close()
    again = PolicyDB(db.path)
    assert again.best(model_family="llama-7b") is None
    assert len(again.list(source="seed")) == len(SEED_RECIPES) - 1


def test_best_under_a_step_budget_skips_diverged_and_respects_mode(db):
    db.add(_entry(0.1, 0.30, 1000))
    db.add(_entry(0.5, 0.10, 1000, diverged=True))  # lowest number, but it diverged
    db.add(_entry(0.05, 0.20, 5000))
    db.add(_entry(0.2, 0.25, 800))
    assert db.best(**TASK).policy["lr"] == 0.05
    assert db.best(**TASK, max_steps=1000).policy["lr"] == 0.2
    assert db.best(**TASK, max_steps=500) is None
    assert len(db.list(**TASK, include_diverged=False)) == 3
    # accuracy: higher is better
    acc = {**TASK, "dataset": "digits-acc"}
    db.add({**acc, "policy": {"name": "constant", "lr": 0.1}, "metric": "acc", "mode": "max", "best_metric": 0.9})
    db.add({**acc, "policy": {"name": "constant", "lr": 0.3}, "metric": "acc", "mode": "max", "best_metric": 0.95})
    assert db.best(**acc).policy["lr"] == 0.3


@pytest.mark.parametrize("bad,msg", [
    ({**_entry(0.1, 1.0, 10), "batch_size": 0}, "batch_size must be >= 1"),
    ({**_entry(0.1, float("nan"), 10)}, "final_metric must be finite"),
    ({**_entry(0.1, 1.0, 10), "policy": {"name": "cosine", "lr": 0.1}}, "missing parameter 'total_steps'"),
    ({k: v for k, v in _entry(0.1, 1.0, 10).items() if k != "dataset"}, "missing field 'dataset'"),
    ({**_entry(0.1, 1.0, 10), "diverged": "no"}, "diverged must be true or false"),
    ({**_entry(0.1, 1.0, 10), "colour": "red"}, "unknown field(s): colour"),
    ({**_entry(0.1, 1.0, 10), "steps": 1.5}, "steps must be an integer"),
])
def test_bad_entries_are_rejected_and_nothing_is_stored(db, bad, msg):
    before = len(db.list())
    with pytest.raises(ValueError) as e:
        db.add_many([_entry(0.1, 1.0, 10), bad])
    assert msg in str(e.value)
    assert len(db.list()) == before


def _cli(dbpath, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "losswatch.service.cli", "policies", "--db", str(dbpath), *args],
                          capture_output=True, text=True, timeout=60, input=stdin)


def test_cli_add_best_list_delete(tmp_path):
    p = tmp_path / "cli.sqlite"
    r = _cli(p, "add", "--model-family", "mlp", "--dataset", "digits", "--optimizer", "sgd", "--batch-size", "32",
             "--policy", '{"name": "one_cycle", "max_lr": 0.3, "total_steps": 300}', "--final-metric", "0.12",
             "--steps", "300")
    assert r.returncode == 0, r.stderr
    lines = "".join(json.dumps(_entry(lr, f, 300)) + "\n" for lr, f in ((0.01, 0.5), (0.1, 0.08)))
    r = _cli(p, "add", "--json", "-", stdin=lines)
    assert r.returncode == 0 and "added 2 entries" in r.stdout
    r = _cli(p, "best", "--model-family", "mlp", "--max-steps", "300", "--format", "json")
    best = json.loads(r.stdout)
    assert best["policy"] == {"name": "cosine", "lr": 0.1, "total_steps": 300, "min_lr": 0.0}
    r = _cli(p, "list", "--model-family", "mlp", "--format", "json")
    assert len(r.stdout.strip().splitlines()) == 3
    r = _cli(p, "list")
    assert "resnet-50/imagenet/sgd/bs256" in r.stdout and "one_cycle" in r.stdout
    assert _cli(p, "delete", str(best["id"])).returncode == 0
    assert _cli(p, "delete", str(best["id"])).returncode == 1
    assert _cli(p, "best", "--model-family", "nothing-like-it").returncode == 1


def test_cli_bad_input_is_a_clear_error_and_loses_nothing(tmp_path):
    p = tmp_path / "cli.sqlite"
    _cli(p, "list")
    n0 = len(PolicyDB(str(p)).list())
    r = _cli(p, "add", "--model-family", "m", "--dataset", "d", "--optimizer", "o", "--batch-size", "8",
             "--policy", "{not json")
    assert r.returncode == 2 and "--policy is not JSON" in r.stderr
    good = json.dumps(_entry(0.1, 0.5, 10))
    r = _cli(p, "add", "--json", "-", stdin=good + "\n" + json.dumps({**_entry(0.1, 0.5, 10), "batch_size": -1}) + "\n")
    assert r.returncode == 2 and "nothing added" in r.stderr and "batch_size" in r.stderr
    (tmp_path / "junk.sqlite").write_text("this is not sqlite" * 100)
    r = _cli(tmp_path / "junk.sqlite", "list")
    assert r.returncode == 2 and "not a usable policy database" in r.stderr
    assert len(PolicyDB(str(p)).list()) == n0


def test_rest_api(store_env, service_factory, tmp_path):
    dbpath = tmp_path / "svc.sqlite"
    svc = service_factory(env={**store_env, "LOSSWATCH_POLICY_DB": str(dbpath), "LOSSWATCH_TOKENS": "tok=projA"})
    h = {"Authorization": "Bearer tok"}
    with httpx.Client(base_url=svc.url, timeout=10) as c:
        assert c.get("/v1/policies").status_code == 401
        r = c.get("/v1/policies/best", params={"model_family": "gpt2-124m"}, headers=h)
        assert r.status_code == 200 and r.json()["policy"]["lr"] == 6e-4
        r = c.post("/v1/policies", json={"entries": [_entry(0.1, 0.3, 1000), _entry(0.2, 0.2, 2000)]}, headers=h)
        assert r.status_code == 201 and len(r.json()["added"]) == 2
        r = c.get("/v1/policies/best", params={**TASK, "max_steps": 1500}, headers=h)
        assert r.json()["policy"]["lr"] == 0.1
        # bad input: 422 naming the problem, nothing stored
        n = len(c.get("/v1/policies", params=TASK, headers=h).json()["policies"])
        bad = c.post("/v1/policies", content=b'{"entries": [' + json.dumps(_entry(0.3, 0.1, 10)).encode()
                     + b', {"model_family": "m", "dataset": "d", "optimizer": "o", "batch_size": 8, '
                       b'"policy": {"name": "constant", "lr": 0.1}, "final_metric": NaN}]}',
                     headers={**h, "Content-Type": "application/json"})
        assert bad.status_code == 422 and "final_metric must be finite" in bad.text and "nothing was added" in bad.text
        assert c.post("/v1/policies", content=b"{oops", headers={**h, "Content-Type": "application/json"}).status_code == 422
        assert len(c.get("/v1/policies", params=TASK, headers=h).json()["policies"]) == n
        assert c.get("/v1/policies/best", params={"model_family": "none"}, headers=h).status_code == 404
        assert c.get(f"/v1/policies/{2**70}", headers=h).status_code == 422
        assert c.get("/v1/policies", params={"max_steps": 2**70}, headers=h).status_code == 422
        big = c.post("/v1/policies", json={**_entry(0.1, 0.3, 10), "steps": 2**70}, headers=h)
        assert big.status_code == 422 and "too large" in big.text
        assert c.post("/v1/policies", json=[1, 2], headers=h).status_code == 422
        eid = r.json()["id"]
        assert c.get(f"/v1/policies/{eid}", headers=h).json()["final_metric"] == 0.3
        assert c.delete(f"/v1/policies/{eid}", headers=h).status_code == 200
        assert c.get(f"/v1/policies/{eid}", headers=h).status_code == 404
    # the service keeps its policies in its store: the CLI's SQLite file is not even created
    assert not dbpath.exists()


def test_entries_belong_to_the_writing_project_and_seeds_are_read_only(store_env, service_factory, tmp_path):
    svc = service_factory(env={**store_env, "LOSSWATCH_POLICY_DB": str(tmp_path / "own.sqlite"),
                               "LOSSWATCH_TOKENS": "ta=projA;tb=projB;tab=projA,projB"})
    a, b, ab = ({"Authorization": f"Bearer {t}"} for t in ("ta", "tb", "tab"))
    with httpx.Client(base_url=svc.url, timeout=10) as c:
        r = c.post("/v1/policies", json=_entry(0.1, 0.3, 1000), headers=a)
        assert r.status_code == 201 and r.json()["added"][0]["project"] == "projA"
        eid = r.json()["added"][0]["id"]
        # another project neither sees nor deletes it: 404, as if it did not exist
        assert c.get(f"/v1/policies/{eid}", headers=b).status_code == 404
        assert c.delete(f"/v1/policies/{eid}", headers=b).status_code == 404
        assert c.get("/v1/policies", params=TASK, headers=b).json()["policies"] == []
        assert c.get("/v1/policies/best", params=TASK, headers=b).status_code == 404
        assert c.get(f"/v1/policies/{eid}", headers=a).json()["final_metric"] == 0.3
        # the seeded recipes: readable by every project, deletable by none
        seeds = c.get("/v1/policies", params={"source": "seed"}, headers=b).json()["policies"]
        assert len(seeds) == len(SEED_RECIPES) and all(s["project"] is None for s in seeds)
        assert c.delete(f"/v1/policies/{seeds[0]['id']}", headers=b).status_code == 403
        assert c.delete(f"/v1/policies/{seeds[0]['id']}", headers=a).status_code == 403
        assert c.get(f"/v1/policies/{seeds[0]['id']}", headers=a).status_code == 200
        # a token of several projects names one; a project it does not cover is refused
        assert c.post("/v1/policies", json=_entry(0.2, 0.2, 500), headers=ab).status_code == 422
        assert c.post("/v1/policies", json=_entry(0.2, 0.2, 500), params={"project": "projB"},
                      headers=a).status_code == 403
        r = c.post("/v1/policies", json={**_entry(0.2, 0.2, 500), "project": "projB"}, headers=ab)
        assert r.status_code == 201 and r.json()["added"][0]["project"] == "projB"
        assert [e["project"] for e in c.get("/v1/policies", params=TASK, headers=ab).json()["policies"]] == \
            ["projA", "projB"]
        assert c.delete(f"/v1/policies/{eid}", headers=a).status_code == 200
        assert c.get(f"/v1/policies/{eid}", headers=ab).status_code == 404


def test_a_body_that_is_not_an_object_is_422_as_the_spec_says(store_env, service_factory, tmp_path):
    svc = service_factory(env={**store_env, "LOSSWATCH_POLICY_DB": str(tmp_path / "n.sqlite")})
    with httpx.Client(base_url=svc.url, timeout=10) as c:
        spec = c.get("/openapi.json").json()
        post = spec["paths"]["/v1/policies"]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
        for path in ("/v1/policies/{entry_id}", "/v1/policies/best"):
            assert "404" in str(spec["paths"][path]["get"]["responses"]), path
        assert "404" in spec["paths"]["/v1/policies/{entry_id}"]["delete"]["responses"]
        r = c.post("/v1/policies", content=b"null", headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        # with auth off an entry without a project goes to the default project
        r = c.post("/v1/policies", json=_entry(0.1, 0.3, 10))
        assert r.status_code == 201 and r.json()["added"][0]["project"] == "default"


def test_a_database_from_before_owners_keeps_its_entries_public(tmp_path):
    import sqlite3

    p = tmp_path / "old.sqlite"
    PolicyDB(str(p)).close()
    con = sqlite3.connect(p)
    con.execute("ALTER TABLE policies DROP COLUMN project")
    con.commit()
    con.close()
    db = PolicyDB(str(p))
    assert len(db.list(projects=frozenset(["x"]))) == len(SEED_RECIPES)
    assert db.add({**_entry(0.1, 0.3, 10), "project": "x"}).project == "x"
    assert len(db.list(projects=frozenset(["y"]))) == len(SEED_RECIPES)
