"""Class-preserving variants of the tune part's real logs: how many keep their right verdict.

Usage::

    .venv/bin/python bench/real_variants.py                          # divergence, divergence_slow, spike
    .venv/bin/python bench/real_variants.py --label dead --label nan  # other labels
    .venv/bin/python bench/real_variants.py --json OUT.json          # every file's verdict per variant

A rule whose verdict flips when the same run is logged differently is brittle: it fits the file,
not the class. Each problem log of the tune part (sure high or medium; healthy logs with
``--label healthy``) is replayed as it is and as variants that keep what happened:

* ``thin2``, ``thin3``, ``thin5``: every 2nd/3rd/5th row, plus the onset row and the 3 rows after
  it (as bench/real_logs.py thins to every 10th), for logs of 30 rows or more;
* ``cut30``: the first 30 % of the rows dropped, never closer than 5 rows to the onset;
* ``stepx10``: the step column x10 (integer steps only);
* ``lossx0.1``, ``lossx10``, ``loss+1``: the loss and validation loss scaled, or shifted by 1
  (ratios to the best change under a shift: rules on the loss's own ratio are expected to be
  scale-free, not shift-free);
* ``no_grad_norm``, ``no_lr``, ``no_val_loss``: one logged column dropped (a log that has a
  training loss too; a spike or blow-up seen only in the dropped column is then gone).

Verdicts come from ../shared/tools/score_real.py (the same rules as bench/real_logs.py). Only the
tune part is read: holdout files are never replayed here. Nothing is written to the corpus.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "real"))
from split import part_of  # noqa: E402

import real_logs  # noqa: E402

MIN_THIN_ROWS, KEEP_AFTER, CUT_SHARE, CUT_MARGIN = 30, 3, 0.3, 5
DEFAULT_LABELS = ("divergence", "divergence_slow", "spike")


def _scorer():
    spec = importlib.util.spec_from_file_location("score_real", real_logs.SCORER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _num(v: str | None) -> float | None:
    try:
        return float(v) if v is not None and v.strip() else None
    except ValueError:
        return None


def variants(fields: list[str], rows: list[dict], onset: int) -> dict[str, tuple[list[str], list[dict], int]]:
    """``{name: (columns, rows, onset)}`` for one log: the log itself (``orig``) and its variants."""
    steps = [int(float(r["step"])) for r in rows]
    o = next((i for i, s in enumerate(steps) if s >= onset), len(rows))
    out = {"orig": (fields, rows, onset)}
    if len(rows) >= MIN_THIN_ROWS:
        for k in (2, 3, 5):
            keep = set(range(0, len(rows), k)) | set(range(o, min(o + KEEP_AFTER + 1, len(rows))))
            out[f"thin{k}"] = (fields, [r for i, r in enumerate(rows) if i in keep], onset)
    cut = min(int(CUT_SHARE * len(rows)), o - CUT_MARGIN)
    if cut >= 2:
        out["cut30"] = (fields, rows[cut:], onset)
    if all(float(r["step"]) == int(float(r["step"])) for r in rows):
        out["stepx10"] = (fields, [dict(r, step=str(int(float(r["step"])) * 10)) for r in rows], onset * 10)

    def moved(factor: float, shift: float = 0.0) -> list[dict]:
        new = []
        for r in rows:
            r = dict(r)
            for c in ("loss", "val_loss"):
                v = _num(r.get(c))
                if v is not None:
                    r[c] = repr(v * factor + shift)
            new.append(r)
        return new

    out["lossx0.1"] = (fields, moved(0.1), onset)
    out["lossx10"] = (fields, moved(10.0), onset)
    out["loss+1"] = (fields, moved(1.0, 1.0), onset)
    has = lambda c: c in fields and any(_num(r.get(c)) is not None for r in rows)  # noqa: E731
    for c in ("grad_norm", "lr", "val_loss"):
        if has(c) and has("loss"):
            out[f"no_{c}"] = ([f for f in fields if f != c], [{k: v for k, v in r.items() if k != c} for r in rows], onset)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", action="append", help=f"labels to vary (repeatable; default {', '.join(DEFAULT_LABELS)})")
    ap.add_argument("--json", type=Path, help="write every file's verdict per variant here")
    ap.add_argument("--losswatch", type=Path, default=real_logs.LOSSWATCH, help="the losswatch command to replay with")
    a = ap.parse_args(argv)
    if not real_logs.SCORER.exists():
        print(f"real_variants: no scorer at {real_logs.SCORER} (set LOSSWATCH_SCORE_REAL)", file=sys.stderr)
        return 2
    scorer = _scorer()
    want = set(a.label or DEFAULT_LABELS)
    jobs = []
    for rel, lab in sorted(real_logs.load_labels().items()):
        if part_of(rel) != "tune" or lab["label"] not in want:
            continue
        if lab["label"] != "healthy" and lab.get("sure") not in ("high", "medium"):
            continue
        with open(real_logs.source_path(rel), newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = list(reader.fieldnames or []), [r for r in reader if (r.get("step") or "").strip()]
        for name, v in variants(fields, rows, int(lab.get("onset") or 0)).items():
            jobs.append((rel, lab, name, v))

    def judge(job) -> tuple[str, str, str]:
        rel, lab, name, (fields, rows, onset) = job
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "log.csv")
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
            events, _ = scorer.replay(str(a.losswatch), path)
            if events is None:
                return rel, name, "failed"
            return rel, name, scorer.verdict(lab["label"], onset, events, scorer.rows_of(path))[0]

    verdicts: dict[str, dict[str, str]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # one replay per core
        for rel, name, v in pool.map(judge, jobs):
            verdicts.setdefault(rel, {})[name] = v
    per_variant: dict[str, list[int]] = {}
    for by_name in verdicts.values():
        for name, v in by_name.items():
            c = per_variant.setdefault(name, [0, 0])
            c[0] += v == "right"
            c[1] += 1
    for name, (right, n) in per_variant.items():
        print(f"{name:12s} {right}/{n} right")
    right, n = sum(c[0] for c in per_variant.values()), sum(c[1] for c in per_variant.values())
    print(f"{'all':12s} {right}/{n} right ({len(verdicts)} logs)")
    for rel, by_name in sorted(verdicts.items()):
        wrong = {k: v for k, v in by_name.items() if v != "right"}
        if wrong:
            print(f"  {rel}: " + ", ".join(f"{k} {v}" for k, v in wrong.items()))
    if a.json:
        a.json.write_text(json.dumps(verdicts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
