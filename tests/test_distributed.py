"""A real 2-process torch.distributed job on CPU (gloo; tests/distributed_worker.py is one rank):
rank 0 alone reports the run, each step is stored once, acting decided on rank 0 takes effect on
both ranks at the same step (same LR, identical parameters), and a rank that stops early does not
hang the other."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytest.importorskip("torch")

from fixtures.ports import free_port  # noqa: E402
from service_helpers import get_json, get_text  # noqa: E402

WORKER = Path(__file__).with_name("distributed_worker.py")


def run_job(scenario: str, out_dir: Path, url: str | None = None, timeout: float = 50.0,
            **env: str) -> list[dict]:
    """Start both ranks, wait for both, return what each wrote (rank 0 first)."""
    port = str(free_port())
    full_env = {**os.environ, **env, "OMP_NUM_THREADS": "1"}
    logs = [(out_dir / f"rank{r}.out").open("w") for r in (0, 1)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), scenario, str(r), "2", port, str(out_dir)]
                              + ([url] if url else []), env=full_env, stdout=logs[r], stderr=subprocess.STDOUT)
             for r in (0, 1)]
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
    outputs = "\n".join(f"--- rank {r}:\n" + (out_dir / f"rank{r}.out").read_text() for r in (0, 1))
    assert [p.returncode for p in procs] == [0, 0], outputs
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in (0, 1)]


def losswatch_warnings(result: dict) -> list[str]:
    return [w for w in result["warnings"] if "losswatch" in w]


@pytest.mark.timeout(90)
def test_a_ddp_job_is_one_run_stored_once_and_an_action_lands_on_both_ranks_at_the_same_step(
        service_proc, tmp_path) -> None:
    run_id = f"ddp-{uuid.uuid4().hex[:8]}"
    rank0, rank1 = run_job("train", tmp_path, service_proc, RUN_ID=run_id, LR="2.0", K="5")

    # one run id, each step stored once
    assert rank0["run_id"] == rank1["run_id"] == run_id
    runs = [r["run_id"] for r in get_json(service_proc, "/v1/runs?project=ddp-test")["runs"]]
    assert runs == [run_id]
    steps = get_json(service_proc, f"/v1/runs/{run_id}/steps?project=ddp-test")["series"]["step"]
    assert steps == rank0["logged"]
    duplicates = re.search(r'losswatch_ingest_records_total\{[^}]*"duplicate"[^}]*\} (\S+)',
                           get_text(service_proc, "/metrics"))
    assert duplicates is None or float(duplicates.group(1)) == 0.0

    # rank 1 sent nothing, spooled nothing, warned about nothing
    assert rank1["stats"]["posts"] == 0 and rank1["stats"]["sent"] == 0
    assert not rank1["spool_dir_exists"]
    assert losswatch_warnings(rank1) == []
    assert all("applied" in line for line in rank1["log"]), rank1["log"]  # no start line, no alerts

    # decided once, on rank 0; applied on both ranks at the same steps
    assert rank0["decided"] and rank1["decided"] == []
    reported = [a for a in get_json(service_proc, f"/v1/runs/{run_id}/alerts?project=ddp-test")["actions"]
                if "verdict" not in a["action"]]
    assert [a["action"]["type"] for a in reported] == [d["type"] for d in rank0["decided"]]
    assert rank0["applied"] == rank1["applied"]
    assert [a["type"] for a in rank0["applied"]][0] == "scale_lr"
    assert all(a["step"] > d["step"] for a, d in zip(rank0["applied"], rank0["decided"]))
    # the same LR at every step, cut on both; identical (finite) parameters at the end
    assert rank0["logged"] == rank1["logged"]
    assert rank0["lrs"] == rank1["lrs"]
    assert rank0["lr"] == rank1["lr"] < 2.0
    assert rank0["finite"] and rank1["finite"]
    assert rank0["digest"] == rank1["digest"]


@pytest.mark.timeout(90)
def test_with_ranks_all_each_rank_is_a_run_of_its_own_and_a_watcher_acts_alike_on_both(
        service_proc, tmp_path) -> None:
    run_id = f"ddp-all-{uuid.uuid4().hex[:8]}"
    rank0, rank1 = run_job("train", tmp_path, service_proc, RUN_ID=run_id, LR="2.0", K="5", RANKS="all",
                           WATCHER="1")
    assert (rank0["run_id"], rank1["run_id"]) == (run_id, f"{run_id}.rank1")
    for r in (rank0, rank1):
        run = get_json(service_proc, f"/v1/runs/{r['run_id']}?project=ddp-test")
        assert run["meta"]["rank"] == r["rank"] and run["meta"]["world_size"] == 2
        assert get_json(service_proc, f"/v1/runs/{r['run_id']}/steps?project=ddp-test")["series"]["step"] == r["logged"]
    # rank 1 has verdicts of its own now, yet only rank 0 decides; both apply the same changes
    assert rank0["decided"] and rank1["decided"] == []
    assert rank0["applied"] and rank0["applied"] == rank1["applied"]
    assert rank0["lrs"] == rank1["lrs"] and rank0["digest"] == rank1["digest"]


@pytest.mark.timeout(60)
def test_a_rank_that_stops_calling_log_does_not_hang_the_other(tmp_path) -> None:
    rank0, rank1 = run_job("stops_early", tmp_path, RUN_ID=f"early-{uuid.uuid4().hex[:8]}", EARLY_RANK="0",
                           EARLY_MODE="stuck")
    assert (rank0["last"], rank1["last"]) == (9, 40)  # rank 1 went on to its last step
    assert rank1["off"] and not rank0["off"]
    gave_up = [line for line in rank1["log"] if "acting is off on this rank" in line]
    assert len(gave_up) == 1, rank1["log"]
    assert "step 15" in gave_up[0]  # the first sync step whose broadcast rank 0 never issued


def test_bad_rank_options_are_a_clear_error_in_any_process() -> None:
    from losswatch.client import Monitor

    for kw, word in (({"ranks": "two"}, "ranks"), ({"sync_every": 0}, "sync_every"),
                     ({"sync_every": 2.5}, "sync_every"), ({"sync_timeout": 0}, "sync_timeout")):
        with pytest.raises(ValueError, match=word):
            Monitor(run_id="bad-options", **kw)


def test_a_monitor_outside_a_distributed_job_never_imports_torch() -> None:
    code = ("import sys; from losswatch.client import Monitor\n"
            "m = Monitor(run_id='no-torch', act=True, ranks='all')\n"
            "m.log(0, loss=1.0); m.log(10, loss=0.5); m.close()\n"
            "assert (m.rank, m.world_size, m.run_id) == (0, 1, 'no-torch')\n"
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_a_message_carries_what_fits_and_leaves_the_rest_for_the_next_sync_step() -> None:
    from losswatch.client.distributed import MESSAGE_BYTES, decode, encode

    cut = {"type": "scale_lr", "factor": 0.1, "reason": "x" * 3000}
    entries = [{"step": 20, "action": dict(cut, n=i)} for i in range(4)]
    data, rest = encode(entries)
    assert len(data) <= MESSAGE_BYTES
    assert decode(data + bytes(MESSAGE_BYTES - len(data))) == entries[:2]
    assert rest == [e["action"] for e in entries[2:]]
    # one action too large on its own goes without its reason (words for people)
    data, rest = encode([{"step": 20, "action": dict(cut, reason="y" * MESSAGE_BYTES)}])
    assert decode(data) == [{"step": 20, "action": {"type": "scale_lr", "factor": 0.1}}] and rest == []
    assert decode(bytes(MESSAGE_BYTES)) == []


@pytest.mark.timeout(60)
def test_a_rank_whose_process_ended_does_not_hang_rank_0(tmp_path) -> None:
    rank0, rank1 = run_job("stops_early", tmp_path, RUN_ID=f"gone-{uuid.uuid4().hex[:8]}", EARLY_RANK="1",
                           EARLY_MODE="gone")
    assert (rank0["last"], rank1["last"]) == (40, 9)
    # rank 0 may or may not hear that its broadcasts reach nobody; if it does, it says so once
    gave_up = [line for line in rank0["log"] if "acting is off on this rank" in line]
    assert len(gave_up) == (1 if rank0["off"] else 0), rank0["log"]


@pytest.mark.timeout(60)
def test_a_monitor_acting_on_rank_0_alone_gives_up_once_and_changes_nothing(tmp_path) -> None:
    rank0, _ = run_job("zero_only", tmp_path, RUN_ID=f"alone-{uuid.uuid4().hex[:8]}")
    assert rank0["last"] == 20 and rank0["off"] and not rank0["decides"]
    assert len([line for line in rank0["log"] if "acting is off on this rank" in line]) == 1, rank0["log"]
    assert rank0["refused"] == "refused" and rank0["lr"] == 0.1  # its replica stays like the others


def test_rank_0_finds_a_missing_checkpoint_when_it_decides_and_shares_the_next_rung(tmp_path) -> None:
    # the same ladder as in a single process: the rollback that cannot be made is not shared
    # (it would fail on every rank later, unseen by the ladder); the stop after it is
    import torch

    from losswatch.client.acting import Actor, Status
    from losswatch.client.distributed import DecisionSync

    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    called: list[int] = []
    actor = Actor(opt, on_rollback=lambda step, ck: called.append(step), cooldown_steps=0)
    actor.shared = sync = DecisionSync(monitor=None, rank=0, world_size=2, every=5)
    gone = tmp_path / "ck-0.pt"
    gone.write_text("state")
    actor.checkpoints.add(0, str(gone))
    gone.unlink()
    nan = {"id": "r:nan:15", "incident": "r:nan:15", "kind": "nan", "severity": "critical", "step": 15,
           "last_step": 16}
    out = actor.apply(16, {"type": "rollback", "to_step": 14}, nan)
    assert out.status is Status.APPLIED and out.action["type"] == "stop"
    assert [a["type"] for a in sync._outbox] == ["stop"]
    assert called == [] and not actor.stop_requested  # made on every rank at a later sync step
