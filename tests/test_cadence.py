"""Cadence robustness: a healthy log read at another cadence gets no LR advice its full log lacks.

A user's log is every 10th or 50th step, or its step column counts in other units (tokens,
optimizer steps of a gradient-accumulating loop). Thinning a healthy run's log to every k-th row
(k in 2, 5, 10, 50) or scaling its step column must never add an alarm that changes the LR
(raise, lower, roll back, stop) in a direction the full log's alarms do not already take. Checked
on the benchmark's healthy runs, the healthy public logs (when ../shared is there) and the healthy
logs of the real-log corpus's tune part (the holdout part stays untouched).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from losswatch.detectors import Engine
from losswatch.detectors.types import Record
from losswatch.service.readers import read_run

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PUBLIC = Path(os.environ.get("LOSSWATCH_PUBLIC_LOGS", ROOT.parent / "shared" / "data" / "public-logs"))
THIN = (2, 5, 10, 50)

#: Cases (file, variant) where a thinned or scaled healthy log still gets advice its full log
#: lacks, as measured when this test was written: the count may only go down. Kept as a ceiling,
#: not a list, so a fix passes without editing the test. They are: the streak rule on three
#: least-squares runs thinned 2x and 10x (three rises in the first records, 1.5-1.65x the best,
#: where the practitioner's 2.5, 2.4, 2.6, 3.1, 4.2 is 1.75x); the overfitting rule on one
#: cyclic-LR MLP thinned 5x (its val loss sampled every 250 steps); the early-stall rule on the
#: llm.c log with its steps x7; the slow-progress rule on one GPT-2 1.5B log thinned 2x (h 0.29
#: at step 512 against a bar of 0.25: its level EMA lags twice as many steps).
KNOWN_CEILING = 6


def _healthy_files() -> list[Path]:
    labels = json.loads((BENCH / "runs" / "labels.json").read_text())
    runs = labels.get("runs", labels)
    files = []
    for rid, lab in sorted(runs.items()):
        conds = [c if isinstance(c, str) else c.get("name") for c in (lab.get("conditions") or lab.get("labels") or [])]
        if conds in ([], ["healthy"]):
            files.append(BENCH / "runs" / f"{rid}.csv")
    real = BENCH / "real"
    split = {}
    exec((real / "split.py").read_text(), split)  # noqa: S102 - the corpus's own split rule
    for rel, lab in sorted(json.loads((real / "LABELS.json").read_text()).items()):
        if lab["label"] == "healthy" and split["part_of"](rel) == "tune":
            files.append(real / rel)
    if PUBLIC.is_dir():
        for rel, lab in sorted(json.loads((real / "public-labels.json").read_text()).items()):
            if lab["label"] == "healthy" and (PUBLIC / rel).exists():
                files.append(PUBLIC / rel)
    return files


def _directions(recs: list[Record]) -> set[str]:
    eng, out = Engine("cadence"), set()
    for a in eng.update_batch(recs):
        if a.severity != "info" and a.event in ("raised", "escalated") and a.action.direction != "none":
            out.add(a.action.direction)
    return out


def _variants(recs: list[Record]):
    for k in THIN:
        yield f"every {k}th row", recs[::k]
    yield "steps x7 + 3", [Record(step=r.step * 7 + 3, loss=r.loss, grad_norm=r.grad_norm, lr=r.lr,
                                  val_loss=r.val_loss) for r in recs]


def test_thinning_or_scaling_a_healthy_log_adds_no_lr_advice():
    files = _healthy_files()
    assert len(files) >= 60, "the benchmark's healthy runs and the corpus's healthy logs are there"
    added = []
    for path in files:
        recs = list(read_run(path, "csv"))
        full = _directions(recs)
        for name, variant in _variants(recs):
            extra = _directions(variant) - full
            if extra:
                added.append(f"{path.name} ({name}): {sorted(extra)}")
    assert len(added) <= KNOWN_CEILING, "\n".join(added)


@pytest.mark.parametrize("k", (1,) + THIN)
def test_a_warm_up_is_not_told_to_raise_the_lr(k):
    """A run sits near its first loss while its LR still climbs (a long warm-up): the plateau
    rule waits for the ramp to end instead of calling the LR too small, at every cadence
    (without that wait it fires at k = 1, 2, 5 and 10)."""
    import math
    n = 4000
    lrs = [1e-3 * min(1.0, s / 2000) for s in range(n)]
    loss = [2.05] + [2.0 + 0.02 * math.sin(0.7 * s) if s < 1500 else
                     0.3 + 1.7 * math.exp(-(s - 1500) / 300) for s in range(1, n)]
    recs = [Record(step=s, loss=loss[s], lr=lrs[s]) for s in range(n)]
    assert "up" not in _directions(recs[::k])
