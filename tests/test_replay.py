"""``losswatch replay``: the real command in a subprocess, over real files, through the real Engine."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

PRACTITIONER_CSV = "step,loss,grad_norm,lr\n0,2.5,1.0,0.1\n1,2.4,1.1,0.1\n2,2.6,1.3,0.1\n3,3.1,2.0,0.1\n4,4.2,3.5,0.1\n5,NaN,nan,0.1\n"


def replay(*args: str, stdin_tty: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "losswatch.service.cli", "replay", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _alerts(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_practitioner_run_divergence_then_nan(tmp_path):
    """The practitioner's example: loss 2.5, 2.4, 2.6, 3.1, 4.2, NaN must draw a divergence alert
    advising to cut the LR 10x *before* the NaN, and a nan alert on the NaN step."""
    p = tmp_path / "practitioner.csv"
    p.write_text(PRACTITIONER_CSV)
    res = replay(str(p))
    assert res.returncode == 0, res.stderr
    alerts = _alerts(res.stdout)
    raised = [a for a in alerts if a["event"] == "raised"]
    div = [a for a in raised if a["kind"] == "divergence"]
    nan = [a for a in raised if a["kind"] == "nan"]
    assert div, f"no divergence alert: {alerts}"
    assert div[0]["step"] < 5 and div[0]["action"]["type"] == "scale_lr"
    assert div[0]["action"]["factor"] == pytest.approx(0.1)
    assert nan and nan[0]["step"] == 5
    assert all(a["run_id"] == "practitioner" for a in alerts)
    # the summary line on stderr
    summary = res.stderr.strip().splitlines()[-1]
    assert "6 records read" in summary and "final health critical" in summary


def test_replay_is_online_and_chunking_does_not_change_alerts(tmp_path):
    """An alert at step t only uses records up to t: replaying the file cut right after the step
    of each alert yields that alert identically, and every chunk size gives the same output."""
    rows = ["step,loss,grad_norm,lr"]
    loss = 3.0
    for s in range(400):
        if s < 250:
            loss = 3.0 * 0.995 ** s + 0.02 * math.sin(s)
        else:
            loss *= 1.04  # diverges
        rows.append(f"{s},{loss:.6f},{1.0 + (0 if s < 250 else (s - 250) * 0.3):.4f},0.01")
    full = tmp_path / "run.csv"
    full.write_text("\n".join(rows) + "\n")
    out = {}
    for chunk in ("1", "7", "1024"):
        res = replay(str(full), "--chunk-size", chunk, "--run-id", "r")
        assert res.returncode == 0, res.stderr
        out[chunk] = res.stdout
    assert out["1"] == out["7"] == out["1024"]
    alerts = [a for a in _alerts(out["1024"]) if a["event"] == "raised"]
    assert alerts, "a run whose loss grows 4% a step drew no alert"
    assert any(a["step"] >= 250 and a["severity"] != "info" for a in alerts), alerts
    for a in alerts[:3]:
        cut = tmp_path / f"cut{a['step']}.csv"
        cut.write_text("\n".join(rows[: a["step"] + 2]) + "\n")  # header + steps 0..t
        res = replay(str(cut), "--run-id", "r")
        again = [b for b in _alerts(res.stdout) if b["id"] == a["id"] and b["event"] == "raised"]
        assert again and again[0] == a


def test_every_input_format_gives_the_same_alerts(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from torch.utils.tensorboard import SummaryWriter

    steps = [(0, 2.5, 1.0, 0.1), (1, 2.4, 1.1, 0.1), (2, 2.6, 1.3, 0.1), (3, 3.1, 2.0, 0.1), (4, 4.2, 3.5, 0.1),
             (5, float("nan"), float("nan"), 0.1)]
    csv_p = tmp_path / "run.csv"
    csv_p.write_text(PRACTITIONER_CSV)
    jsonl_p = tmp_path / "run.jsonl"
    jsonl_p.write_text("".join(json.dumps({"step": s, "loss": loss if loss == loss else "NaN", "grad_norm": g if g == g else "NaN",
                                           "lr": lr}) + "\n" for s, loss, g, lr in steps))
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"step": s, "loss": loss, "grad_norm": g, "learning_rate": lr, "epoch": s / 10} for s, loss, g, lr in steps]}))
    tb = tmp_path / "tb"
    w = SummaryWriter(log_dir=str(tb))
    for s, loss, g, lr in steps:
        # float32 in the event file: use values float32 represents exactly so all formats agree
        w.add_scalar("train/loss", loss, s, double_precision=True, new_style=True)
        w.add_scalar("train/grad_norm", g, s, double_precision=True, new_style=True)
        w.add_scalar("train/learning_rate", lr, s, double_precision=True, new_style=True)
    w.close()
    outputs = []
    for path in (csv_p, jsonl_p, hf_dir / "trainer_state.json", tb):
        res = replay(str(path), "--run-id", "same")
        assert res.returncode == 0, (path, res.stderr)
        outputs.append(_alerts(res.stdout))
    assert outputs[0], "no alerts at all"
    for other in outputs[1:]:
        assert [(a["kind"], a["step"], a["severity"], a["action"]["type"]) for a in other] == \
               [(a["kind"], a["step"], a["severity"], a["action"]["type"]) for a in outputs[0]]


def test_table_output_and_fail_on(tmp_path):
    p = tmp_path / "practitioner.csv"
    p.write_text(PRACTITIONER_CSV)
    res = replay(str(p), "--format", "table")
    lines = res.stdout.splitlines()
    assert lines[0].split()[:5] == ["step", "event", "severity", "kind", "action"]
    assert any(" nan " in f" {line} " and "critical" in line for line in lines[1:])
    assert replay(str(p), "--fail-on", "critical").returncode == 1
    healthy = tmp_path / "healthy.csv"
    # converging to a floor: what a healthy run looks like (a straight-line descent is "LR too small")
    healthy.write_text("step,loss,grad_norm,lr\n" + "".join(
        f"{s},{0.5 + 1.5 * math.exp(-s / 40) + 0.01 * math.sin(s):.4f},1.0,0.001\n" for s in range(300)))
    res = replay(str(healthy), "--fail-on", "warning", "--format", "table")
    assert res.returncode == 0, res.stdout
    assert "300 records read" in res.stderr and "final health ok" in res.stderr
    assert res.stdout.strip() == "no alerts"


def test_duplicates_and_out_of_order_steps_are_counted_not_fed(tmp_path):
    p = tmp_path / "dup.csv"
    p.write_text("step,loss\n0,2.0\n1,1.9\n1,1.9\n0,2.0\n2,1.8\n")
    res = replay(str(p))
    assert res.returncode == 0, res.stderr
    assert "5 records read" in res.stderr and "2 ignored (duplicate or out-of-order steps)" in res.stderr
    assert "steps 0..2" in res.stderr


@pytest.mark.parametrize("name, content, expected", [
    ("bad.csv", "step,loss,grad_norm,lr\n0,1,1,0.1\n1,abc,1,0.1\n", "bad.csv line 3: column loss: could not parse 'abc'"),
    ("nostep.csv", "loss,lr\n1,0.1\n", "nostep.csv line 1: no 'step' column in the header (loss, lr)"),
    ("empty.csv", "", "empty.csv: empty file"),
    ("trunc.jsonl", '{"step": 0, "loss": 1.0}\n{"step": 1, "lo', "trunc.jsonl line 2: invalid JSON: Unterminated string"),
    ("types.jsonl", '{"step": 0, "loss": {"v": 1}}\n', "types.jsonl line 1: field loss: expected a number, got dict"),
    ("junk.bin", bytes(range(256)) * 8, "junk.bin: not a recognised run file (binary data"),
    ("trainer_state.json", '{"log_history": [{"step": 1, "loss": 2.0}, {"step": "x"}]}',
     "trainer_state.json log_history[1]: could not parse 'x' as a step"),
])
def test_unreadable_file_is_one_line_and_exit_2(tmp_path, name, content, expected):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    res = replay(str(p))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("losswatch replay: " + expected), lines[0]


def test_missing_file_and_bad_options(tmp_path):
    res = replay(str(tmp_path / "nope.csv"))
    assert res.returncode == 2 and res.stderr.strip().endswith("nope.csv: no such file or directory")
    p = tmp_path / "r.csv"
    p.write_text(PRACTITIONER_CSV)
    res = replay(str(p), "--meta", "{not json")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--meta: invalid JSON" in res.stderr
    res = replay(str(p), "--input-format", "tfevents")
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
