"""Recorded-run readers: every format, NaN handling, and one clear line for every bad file."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from losswatch.service.readers import ReadError, detect_format, parse_tag_map, read_run
from service_helpers import same


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def _read_error(path: Path) -> str:
    """The message of the ReadError that reading the whole of ``path`` raises."""
    with pytest.raises(ReadError) as e:
        list(read_run(path))
    return str(e.value)


# --------------------------------------------------------------------------- CSV


def test_csv_values_missing_cells_and_every_spelling_of_nonfinite(tmp_path):
    p = _write(tmp_path, "run.csv",
               "step,loss,grad_norm,lr,val_loss\n"
               "0,2.5,1.0,0.001,\n"
               "1,NaN,inf,1e-3,2.0\n"
               "2,nan,-Infinity,INF,\n"
               "3,,NAN,-inf,infinity\n")
    recs = list(read_run(p))
    assert [r.step for r in recs] == [0, 1, 2, 3]
    assert recs[0].loss == 2.5 and recs[0].grad_norm == 1.0 and recs[0].lr == 0.001 and recs[0].val_loss is None
    assert math.isnan(recs[1].loss) and recs[1].grad_norm == math.inf and recs[1].val_loss == 2.0
    assert math.isnan(recs[2].loss) and recs[2].grad_norm == -math.inf and recs[2].lr == math.inf
    assert recs[3].loss is None and math.isnan(recs[3].grad_norm) and recs[3].lr == -math.inf
    assert recs[3].val_loss == math.inf


def test_csv_aliases_extra_columns_tabs_and_float_steps(tmp_path):
    p = _write(tmp_path, "log.tsv", "epoch\tglobal_step\ttrain_loss\tlearning_rate\n0.1\t10.0\t3.0\t0.1\n0.2\t20\t2.0\t0.05\n")
    recs = list(read_run(p))
    assert [(r.step, r.loss, r.lr, r.grad_norm) for r in recs] == [(10, 3.0, 0.1, None), (20, 2.0, 0.05, None)]


def test_public_bloom_log_reads_in_order():
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "public-logs" / "bloom-tr8-104B-exp2-divergence.csv"
    if not path.exists():
        path = Path("/work/shared/data/public-logs/bloom-tr8-104B-exp2-divergence.csv")
    lines = path.read_text().splitlines()[1:]
    recs = list(read_run(path))
    assert len(recs) == len(lines)
    first = lines[0].split(",")
    assert recs[0].step == int(first[0]) and recs[0].loss == float(first[1]) and recs[0].grad_norm == float(first[2])


@pytest.mark.parametrize("content, expected", [
    ("step,loss,grad_norm,lr\n0,1,1,0.1\n1,abc,1,0.1\n", "bad.csv line 3: column loss: could not parse 'abc'"),
    ("loss,grad_norm,lr\n1,1,0.1\n", "bad.csv line 1: no 'step' column in the header (loss, grad_norm, lr)"),
    ("step,loss\n0,1\n-3,1\n", "bad.csv line 3: column step: step must be a non-negative integer, got -3"),
    ("step,loss\n0,1\n1.5,1\n", "bad.csv line 3: column step: step must be a non-negative integer, got '1.5'"),
    ("step,loss\n0,1\n,1\n", "bad.csv line 3: column step: step is empty"),
    ("step,loss\n0,1,7\n", "bad.csv line 2: 3 cells, the header has 2"),
    ("step,epoch\n0,1\n", "bad.csv line 1: none of the columns loss, grad_norm, lr, val_loss in the header (step, epoch)"),
    ("", "bad.csv: empty file"),
])
def test_bad_csv_gets_one_line_saying_what_and_where(tmp_path, content, expected):
    message = _read_error(_write(tmp_path, "bad.csv", content))
    assert message == expected
    assert "\n" not in message


# --------------------------------------------------------------------------- JSON lines


def test_jsonl_records_with_wire_nan_strings_and_bare_tokens(tmp_path):
    p = _write(tmp_path, "run.jsonl",
               '{"step": 0, "loss": 2.5, "grad_norm": 1.0, "lr": 0.001, "val_loss": null, "ts": 17.5, "extra": {"tokens_per_s": 5}}\n'
               '\n'
               '{"step": 1, "loss": "NaN", "grad_norm": "Infinity", "lr": 0.001}\n'
               '{"step": 2, "loss": NaN, "grad_norm": -Infinity}\n')
    recs = list(read_run(p))
    assert [r.step for r in recs] == [0, 1, 2]
    assert recs[0].ts == 17.5 and recs[0].extra == {"tokens_per_s": 5.0} and recs[0].val_loss is None
    assert math.isnan(recs[1].loss) and recs[1].grad_norm == math.inf
    assert math.isnan(recs[2].loss) and recs[2].grad_norm == -math.inf and recs[2].lr is None


def test_json_array_of_records(tmp_path):
    p = _write(tmp_path, "run.json", json.dumps([{"step": 0, "loss": 1.0}, {"step": 1, "loss": "nan"}]))
    recs = list(read_run(p))
    assert recs[0].loss == 1.0 and math.isnan(recs[1].loss)


@pytest.mark.parametrize("content, expected", [
    ('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 1.\n', "bad.jsonl line 2: invalid JSON: Expecting ',' delimiter (column 22)"),
    ('{"step": 0, "loss": 1.0}\n{"step": 1, "lo', "bad.jsonl line 2: invalid JSON: Unterminated string starting at (column 13)"),
    ('{"step": "three", "loss": 1.0}\n', "bad.jsonl line 1: could not parse 'three' as a step"),
    ('{"step": true, "loss": 1.0}\n', "bad.jsonl line 1: step must be a non-negative integer, got true"),
    ('{"step": 0, "loss": [1, 2]}\n', "bad.jsonl line 1: field loss: expected a number, got list"),
    ('{"step": 0, "lr": false}\n', "bad.jsonl line 1: field lr: expected a number, got false"),
    ('{"step": 0, "loss": "lots"}\n', "bad.jsonl line 1: field loss: could not parse 'lots'"),
    ('{"loss": 1.0}\n', "bad.jsonl line 1: the record has no 'step'"),
    ('[1, 2]\n', "bad.jsonl record 0: expected a JSON object (a record), got a number"),
    ('"hello"\n', "bad.jsonl line 1: expected a JSON object (a record), got a string"),
])
def test_bad_jsonl_gets_one_line_saying_what_and_where(tmp_path, content, expected):
    assert _read_error(_write(tmp_path, "bad.jsonl", content)) == expected


# --------------------------------------------------------------------------- trainer_state.json


def _trainer_state() -> dict:
    # the shape transformers' Trainer writes (TrainerState.save_to_json): train logs every
    # logging_steps, eval logs at the same step, and a final summary entry
    return {
        "best_metric": None, "epoch": 1.0, "global_step": 20, "is_world_process_zero": True,
        "log_history": [
            {"epoch": 0.5, "grad_norm": 3.1, "learning_rate": 5e-05, "loss": 2.75, "step": 10},
            {"epoch": 0.5, "eval_loss": 2.6, "eval_runtime": 0.1, "eval_samples_per_second": 80.0, "step": 10},
            {"epoch": 1.0, "grad_norm": float("nan"), "learning_rate": 2.5e-05, "loss": 2.5, "step": 20},
            {"epoch": 1.0, "step": 20, "total_flos": 12.0, "train_loss": 2.6, "train_runtime": 1.2,
             "train_samples_per_second": 100.0},
        ],
        "logging_steps": 10, "max_steps": 20,
    }


def test_trainer_state_merges_eval_into_train_step_and_skips_summary(tmp_path):
    d = tmp_path / "checkpoint-20"
    d.mkdir()
    p = d / "trainer_state.json"
    p.write_text(json.dumps(_trainer_state(), indent=2))  # json writes NaN as a bare token, like HF
    assert detect_format(p) == "trainer_state"
    recs = list(read_run(p))
    assert [r.step for r in recs] == [10, 20]
    assert (recs[0].loss, recs[0].grad_norm, recs[0].lr, recs[0].val_loss) == (2.75, 3.1, 5e-05, 2.6)
    assert recs[1].loss == 2.5 and math.isnan(recs[1].grad_norm) and recs[1].val_loss is None


def test_trainer_state_wrong_types(tmp_path):
    state = _trainer_state()
    state["log_history"][2]["loss"] = "high"
    p = _write(tmp_path, "trainer_state.json", json.dumps(state, indent=2))
    with pytest.raises(ReadError, match=r"^trainer_state.json log_history\[2\]: field loss: could not parse 'high'$"):
        list(read_run(p))
    p = _write(tmp_path, "trainer_state.json", json.dumps({"log_history": {"step": 1}}))
    with pytest.raises(ReadError, match=r"^trainer_state.json: log_history must be a list, got an object$"):
        list(read_run(p))
    p = _write(tmp_path, "trainer_state.json", json.dumps(_trainer_state(), indent=2)[:-40])
    with pytest.raises(ReadError, match=r"^trainer_state.json line \d+: invalid JSON"):
        list(read_run(p))


# --------------------------------------------------------------------------- TensorBoard


def _summary_writer(logdir: Path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(logdir))


def test_tfevents_from_torch_summary_writer(tmp_path):
    w = _summary_writer(tmp_path / "tb")
    losses = [2.5, 2.4, 2.6, float("nan")]
    for step, loss in enumerate(losses):
        w.add_scalar("train/loss", loss, step)
        w.add_scalar("train/grad_norm", 1.0 + step, step)
        w.add_scalar("train/learning_rate", 0.1 / (step + 1), step, new_style=True)  # tensor form
        w.add_scalar("accuracy", 0.5, step)  # not ours: ignored
    w.add_scalar("eval/loss", 2.45, 2, double_precision=True, new_style=True)
    w.close()
    files = list((tmp_path / "tb").glob("*tfevents*"))
    assert len(files) == 1
    for path in (tmp_path / "tb", files[0]):  # a log directory or the event file itself
        assert detect_format(path) == "tfevents"
        recs = list(read_run(path))
        assert [r.step for r in recs] == [0, 1, 2, 3]
        for r, loss in zip(recs, losses):
            # scalars are stored as float32
            assert same(r.loss, float(__import__("numpy").float32(loss)))
            assert r.grad_norm == 1.0 + r.step
            assert r.lr == pytest.approx(0.1 / (r.step + 1), rel=1e-6)
        assert recs[2].val_loss == 2.45 and recs[0].val_loss is None


def test_tfevents_tag_map_and_unknown_tags(tmp_path):
    w = _summary_writer(tmp_path / "tb")
    for step in range(3):
        w.add_scalar("objective/ce", 3.0 - step, step)
        w.add_scalar("opt/step_size", 0.01, step)
    w.close()
    with pytest.raises(ReadError, match=r"no scalar tag maps to .* \(scalar tags found: objective/ce, opt/step_size\); name them with --tag-map"):
        list(read_run(tmp_path / "tb"))
    recs = list(read_run(tmp_path / "tb", tag_map=parse_tag_map("loss=objective/ce, lr=opt/step_size")))
    assert [(r.step, r.loss, r.lr) for r in recs] == [(0, 3.0, pytest.approx(0.01)), (1, 2.0, pytest.approx(0.01)),
                                                      (2, 1.0, pytest.approx(0.01))]
    with pytest.raises(ReadError, match="--tag-map: expected FIELD=TAG"):
        parse_tag_map("los=objective/ce")


def test_truncated_and_corrupt_tfevents(tmp_path):
    w = _summary_writer(tmp_path / "tb")
    for step in range(50):
        w.add_scalar("loss", 1.0, step)
    w.close()
    data = next((tmp_path / "tb").glob("*tfevents*")).read_bytes()
    cut = _write(tmp_path, "events.out.tfevents.cut", data[:-7])
    with pytest.raises(ReadError, match=r"^events.out.tfevents.cut byte \d+: truncated record"):
        list(read_run(cut))
    junk = _write(tmp_path, "events.out.tfevents.junk", data[:200] + os.urandom(300))
    with pytest.raises(ReadError, match=r"^events.out.tfevents.junk byte \d+: "):
        list(read_run(junk))


# --------------------------------------------------------------------------- detection and junk


def test_detection_by_content_without_extension(tmp_path):
    assert detect_format(_write(tmp_path, "a", "step,loss\n0,1\n")) == "csv"
    assert detect_format(_write(tmp_path, "b", '{"step": 0, "loss": 1}\n')) == "jsonl"
    assert detect_format(_write(tmp_path, "c", json.dumps(_trainer_state(), indent=1))) == "trainer_state"
    assert detect_format(_write(tmp_path, "d.json", json.dumps(_trainer_state()))) == "trainer_state"


@pytest.mark.parametrize("name", ["junk.bin", "junk.csv", "junk.jsonl", "trainer_state.json", "junk"])
def test_binary_junk_is_one_clear_line(tmp_path, name):
    import random

    rnd = random.Random(7)
    p = _write(tmp_path, name, bytes(rnd.randrange(256) for _ in range(3000)))
    message = _read_error(p)
    assert message.startswith(name + ":") and "\n" not in message


def test_empty_and_missing_files(tmp_path):
    for name in ("empty", "empty.jsonl", "empty.json"):
        p = _write(tmp_path, name, "  \n")
        with pytest.raises(ReadError, match=rf"^{name}: empty file$"):
            list(read_run(p))
    with pytest.raises(ReadError, match="no such file or directory"):
        read_run(tmp_path / "nope.csv")
