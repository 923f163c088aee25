"""Client building blocks without a service: value reading, wire encoding, the spool on real files."""

import json
import math

import numpy as np
import pytest
import torch

from losswatch.client.spool import Spool
from losswatch.client.values import encode, hold, resolve

torch.set_num_threads(1)


def test_resolve_reads_floats_numpy_and_tensors_and_keeps_nan():
    t_loss = torch.tensor(2.5, requires_grad=True) * 1.0  # in a graph
    raw = [
        (0, 1.25, np.float32(0.5), 1e-3, None, 10.0, {"tok_s": np.int64(7)}),
        (1, hold(t_loss), torch.tensor(0.75, dtype=torch.float64), torch.tensor(1e-3), None, 11.0, None),
        (np.int64(2), float("nan"), torch.tensor(float("inf")), None, torch.tensor(3.0, dtype=torch.bfloat16),
         12.0, {"x": torch.tensor([4.0])}),
    ]
    recs, problems = resolve(raw)
    assert problems == []
    assert recs[0] == {"step": 0, "ts": 10.0, "loss": 1.25, "grad_norm": 0.5, "lr": 1e-3, "extra": {"tok_s": 7.0}}
    assert recs[1]["loss"] == 2.5 and recs[1]["grad_norm"] == 0.75
    assert recs[1]["lr"] == pytest.approx(1e-3, rel=1e-6)  # float32 -> float64
    assert recs[2]["step"] == 2 and math.isnan(recs[2]["loss"]) and recs[2]["grad_norm"] == math.inf
    assert recs[2]["val_loss"] == 3.0 and recs[2]["extra"] == {"x": 4.0}
    assert all(type(r["step"]) is int for r in recs)


def test_hold_detaches_tensors_in_a_graph_only():
    w = torch.tensor(1.0, requires_grad=True)
    loss = w * 3
    held = hold(loss)
    assert held.grad_fn is None and not held.requires_grad
    gn = torch.tensor(0.5)
    assert hold(gn) is gn and hold(1.5) == 1.5 and hold(None) is None


def test_resolve_drops_bad_steps_and_non_numbers_with_a_reason():
    raw = [(-1, 1.0, None, None, None, 0.0, None), ("abc", 1.0, None, None, None, 0.0, None),
           (3, "high", None, 0.1, None, 0.0, None), (4, torch.zeros(3), None, None, None, 0.0, None)]
    recs, problems = resolve(raw)
    assert [r["step"] for r in recs] == [3, 4]
    assert "loss" not in recs[0] and recs[0]["lr"] == 0.1
    assert "loss" not in recs[1]  # a 3-value tensor is not a loss
    assert len(problems) == 4
    assert any("non-negative integer" in p for p in problems)
    assert any("'high' is not a number" in p for p in problems)


def test_encode_spells_non_finite_values_as_strings_for_json():
    rec = {"step": 1, "ts": 1.0, "loss": float("nan"), "grad_norm": float("inf"), "lr": -float("inf"),
           "extra": {"a": float("nan"), "b": 2.0}}
    wire = json.loads(json.dumps(encode(rec), allow_nan=False))
    assert wire == {"step": 1, "ts": 1.0, "loss": "NaN", "grad_norm": "Infinity", "lr": "-Infinity",
                    "extra": {"a": "NaN", "b": 2.0}}


def test_spool_spills_to_disk_and_replays_in_order(tmp_path):
    s = Spool(tmp_path / "spool", max_memory=100)
    lines = [json.dumps({"step": i}) for i in range(1000)]
    for i in range(0, 1000, 37):  # arrives in uneven chunks, as from the sender's cycles
        s.extend(lines[i:i + 37])
    assert len(s) == 1000
    assert s.on_disk >= 800 and s.spilled >= 800
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) >= 8
    out = []
    while len(s):
        batch = s.peek(64)
        assert batch
        out.extend(batch)
        s.pop(len(batch))
    assert out == lines
    assert list((tmp_path / "spool").glob("*.jsonl")) == []  # read segments are removed


def test_spool_peek_without_pop_keeps_records_for_a_retry(tmp_path):
    s = Spool(tmp_path, max_memory=10)
    s.extend([str(i) for i in range(25)])
    first = s.peek(5)
    assert s.peek(5) == first  # a failed POST sends the same batch again
    s.pop(5)
    assert s.peek(1) != first[:1] and len(s) == 20


def test_spool_disk_bound_drops_oldest_segments_and_counts_them(tmp_path):
    s = Spool(tmp_path, max_memory=10, max_disk_bytes=200)
    s.extend([json.dumps({"step": i, "pad": "x" * 20}) for i in range(200)])
    assert s.dropped > 0
    assert len(s) == 200 - s.dropped
    kept = []
    while len(s):
        b = s.peek(50)
        kept.extend(json.loads(x)["step"] for x in b)
        s.pop(len(b))
    assert kept == sorted(kept) and kept[-1] == 199  # the newest are kept, in order


def test_spool_spill_all_writes_every_record_in_order(tmp_path):
    s = Spool(tmp_path, max_memory=10)
    s.extend([str(i) for i in range(35)])
    s.pop(len(s.peek(3)))  # part of the oldest segment already delivered
    path = s.spill_all()
    assert path is not None and len(s) == 0
    assert path.read_text().split() == [str(i) for i in range(3, 35)]


def test_docstring_examples_of_the_client_modules_run():
    import doctest

    from losswatch.client import local, spool, values

    for mod in (values, spool, local):
        failed, attempted = doctest.testmod(mod)
        assert attempted > 0 and failed == 0, mod.__name__


def test_spool_on_a_disk_that_refuses_keeps_twice_the_bound_in_memory(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be")
    s = Spool(blocker / "spool", max_memory=100)
    s.extend([str(i) for i in range(150)])
    assert s.spill_error and len(s) == 150 and s.dropped == 0  # nothing lost while it fits
    s.extend([str(i) for i in range(150, 500)])
    assert len(s) == 200 and s.dropped == 300
    assert s.peek(200) == [str(i) for i in range(300, 500)]  # the newest, in order
