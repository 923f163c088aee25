"""Score `losswatch replay` on the real-log corpus (bench/real/), one verdict per file.

Usage::

    .venv/bin/python bench/real_logs.py                 # both parts, full and thinned cadence
    .venv/bin/python bench/real_logs.py --part tune     # while changing a detector
    .venv/bin/python bench/real_logs.py --no-write --json
    .venv/bin/python bench/real_logs.py --files new.txt  # only the listed files (a new intake)

The corpus: real loss sequences with provenance (bench/real/SOURCES.md), labelled in
bench/real/LABELS.json from what their threads say happened, split once by a hash of the file
name (bench/real/split.py) into a part to tune on and a part reported untouched. The logs of
../shared/data/public-logs/ (labels in bench/real/public-labels.json) were tuned on long before:
they belong to the tune part.

Verdicts come from ../shared/tools/score_real.py (its docstring holds the rules: windows in
logged rows; an alarm is a raised or escalated alert of warning or worse). Figures, per part:

* problem cases (label not healthy, sure high or medium): share of right verdicts;
* healthy files: how many got an alarm that changes the LR, rolls back or stops;
* the same again on the thinned corpus: every file of 100 rows or more keeps each of its
  streams (training loss, evaluations) once per 10 of its logging intervals, on one grid of
  steps shared by the streams, plus its onset row and the 3 rows after it (the cadence of a
  log written 10 times less often; an evaluation schedule sparser than that keeps its
  evaluations, and one on the training loss's line stays on it); the number of verdicts that
  change.

Writes bench/results/real-logs.md (aggregates per part; per-file verdicts for the tune part
only: the holdout part is read as figures, never file by file while tuning).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "real"))
sys.path.insert(0, str(HERE))
from split import PARTS, part_of  # noqa: E402

from log_variants import KEEP_AFTER, grid_gap, onset_row, thin_streams  # noqa: E402

REAL = HERE / "real"
PUBLIC_DIR = Path(os.environ.get("LOSSWATCH_PUBLIC_LOGS", HERE.parent.parent / "shared" / "data" / "public-logs"))
SCORER = Path(os.environ.get("LOSSWATCH_SCORE_REAL", HERE.parent.parent / "shared" / "tools" / "score_real.py"))
RESULTS = HERE / "results" / "real-logs.md"
LOSSWATCH = HERE.parent / ".venv" / "bin" / "losswatch"
THIN_EVERY, THIN_MIN_ROWS = 10, 100


def load_labels() -> dict[str, dict]:
    """Every labelled file, keyed by its path as the scorer will see it (public logs under
    ``public/``, mapped onto PUBLIC_DIR when the corpus is staged)."""
    labels = json.loads((REAL / "LABELS.json").read_text())
    pub = REAL / "public-labels.json"
    if pub.exists() and PUBLIC_DIR.is_dir():
        labels.update({f"public/{k}": v for k, v in json.loads(pub.read_text()).items()})
    return labels


def source_path(rel: str) -> Path:
    return PUBLIC_DIR / rel.split("/", 1)[1] if rel.startswith("public/") else REAL / rel


def thin_rows(rows: list[dict], onset: int, phase: int = 0) -> list[dict]:
    """The log written THIN_EVERY times less often: each stream (training loss, evaluations)
    once per THIN_EVERY logging intervals, on one grid of steps (log_variants.thin_streams:
    evaluations on rows of their own are thinned as evaluations, not dropped by where their
    period falls; one on the training loss's line stays on it), plus the onset row
    (the first at or after ``onset``) and the KEEP_AFTER rows after it, whole (the rows its
    verdict is judged on, as the variants keep them).

    ``phase``: the grid starts that many logging intervals later (bench/thin_phases.py: a logger
    writing 10 times less often could have started its grid anywhere); the steps are shifted
    before thinning and restored after it, so the rows kept are the log's own."""
    if len(rows) < THIN_MIN_ROWS:
        return rows
    o = onset_row(rows, onset)
    keep = set(range(o, min(o + KEEP_AFTER + 1, len(rows))))
    if not phase:
        return thin_streams(rows, THIN_EVERY, keep)
    shift = phase * grid_gap(rows)
    moved = [dict(r, step=repr(float(r["step"]) + shift)) for r in rows]
    origin = {id(m): r for m, r in zip(moved, rows)}
    steps = {m["step"]: r["step"] for m, r in zip(moved, rows)}
    # thin_streams passes a kept row on as it is, or a copy with some values blanked
    return [origin[id(k)] if id(k) in origin else dict(k, step=steps[k["step"]])
            for k in thin_streams(moved, THIN_EVERY, keep)]


def stage(labels: dict[str, dict], root: Path, thin: bool, phase: int = 0) -> Path:
    """Copy (or thin, its grid at ``phase``) each file under ``root`` and write the scorer's
    LABELS.json there."""
    for rel, lab in labels.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = source_path(rel)
        if not thin:
            shutil.copyfile(src, dst)
            continue
        with open(src, newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, [r for r in reader if (r.get("step") or "").strip()]
        with open(dst, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(thin_rows(rows, int(lab.get("onset") or 0), phase))
    (root / "LABELS.json").write_text(json.dumps(labels, indent=1))
    return root / "LABELS.json"


def score(labels: dict[str, dict], thin: bool, losswatch: Path = LOSSWATCH, phase: int = 0) -> dict[str, dict]:
    """Verdict rows of score_real.py, keyed by file (thinned on a grid at ``phase``)."""
    if not labels:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        lab = stage(labels, Path(tmp), thin, phase)
        out = Path(tmp) / "verdicts.json"
        subprocess.run([sys.executable, str(SCORER), str(losswatch), str(lab), "--json", str(out)],
                       check=True, capture_output=True, text=True)
        return {r["file"]: r for r in json.loads(out.read_text())["rows"]}


def summarise(rows: dict[str, dict]) -> dict:
    problems = [r for r in rows.values() if r["label"] != "healthy" and r["sure"] in ("high", "medium")]
    healthy = [r for r in rows.values() if r["label"] == "healthy"]
    by_label: dict[str, list[int]] = {}
    for r in problems:
        c = by_label.setdefault(r["label"], [0, 0])
        c[0] += r["verdict"] == "right"
        c[1] += 1
    return {
        "files": len(rows),
        "problems": len(problems), "problems_right": sum(r["verdict"] == "right" for r in problems),
        "healthy": len(healthy), "healthy_false_alarms": sum(r["verdict"] != "right" for r in healthy),
        "spike_warnings_on_healthy": sum(r["spike_warnings"] for r in healthy),
        "by_label": by_label,
        "failed": sorted(r["file"] for r in rows.values() if r["verdict"] == "failed"),
    }


def _pct(a: int, b: int) -> str:
    return "-" if b == 0 else f"{a}/{b} ({100 * a / b:.0f} %)"


def report(figs: dict) -> str:
    lines = [
        "# The real-log corpus through the detectors",
        "",
        "Real loss sequences from issue threads and public training histories (bench/real/, "
        "provenance in bench/real/SOURCES.md), replayed with `losswatch replay` and judged by "
        "../shared/tools/score_real.py, one verdict per file. The split into a tune part and an "
        "untouched holdout part is fixed by a hash of the file name (bench/real/split.py). "
        "Command: `.venv/bin/python bench/real_logs.py`.",
        "",
        "| part | cadence | files | problem cases right (sure high/medium) | healthy files with an LR-changing, rollback or stop alarm | spike warnings on healthy files |",
        "|---|---|---|---|---|---|",
    ]
    for part, f in figs.items():
        for cad in ("full", "thinned"):
            s = f[cad]
            lines.append(f"| {part} | {cad} | {s['files']} | {_pct(s['problems_right'], s['problems'])} | "
                         f"{s['healthy_false_alarms']} of {s['healthy']} | {s['spike_warnings_on_healthy']} |")
    lines += ["", "Verdicts that change when each stream of the log is thinned to one value per 10 logging intervals: " + "; ".join(
        f"{part} {len(f['changed'])}" for part, f in figs.items()) + ".", ""]
    lines += ["Right verdicts per label (problem cases, sure high/medium, full cadence):", "",
              "| label | " + " | ".join(figs) + " |", "|---|" + "---|" * len(figs)]
    labels = sorted({k for f in figs.values() for k in f["full"]["by_label"]})
    for lab in labels:
        lines.append(f"| {lab} | " + " | ".join(
            _pct(*f["full"]["by_label"].get(lab, [0, 0])) for f in figs.values()) + " |")
    if "tune" in figs:
        lines += ["", "## Tune part, file by file", "", "| file | label | sure | verdict | thinned | first alarms (step, kind, severity, action, factor) |",
                  "|---|---|---|---|---|---|"]
        t = figs["tune"]
        for rel, r in sorted(t["rows"].items()):
            th = t["thin_rows"].get(rel, {}).get("verdict", "-")
            ev = "; ".join(", ".join(str(x) for x in e) for e in r["evidence"][:2]) or "-"
            lines.append(f"| {rel} | {r['label']} | {r['sure']} | {r['verdict']} | {th} | {ev} |")
    return "\n".join(lines) + "\n"


def selected(labels: dict[str, dict], only: set[str] | None) -> dict[str, dict]:
    """The labels of the files in ``only`` (all of them for None); a listed file the corpus does
    not label is an error, not a file silently left out of the figures."""
    if only is None:
        return labels
    unknown = sorted(only - set(labels))
    if unknown:
        raise ValueError(f"not labelled in the corpus: {', '.join(unknown[:5])}"
                         + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
    return {k: v for k, v in labels.items() if k in only}


def run(parts: tuple[str, ...], losswatch: Path = LOSSWATCH, only: set[str] | None = None) -> dict:
    labels = selected(load_labels(), only)
    figs = {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # one scorer process per core
        jobs = {}
        for part in parts:
            mine = {k: v for k, v in labels.items() if part_of(k) == part}
            jobs[part] = (pool.submit(score, mine, False, losswatch), pool.submit(score, mine, True, losswatch))
        for part, (full, thin) in jobs.items():
            rows, trows = full.result(), thin.result()
            changed = sorted(k for k in rows if trows.get(k, {}).get("verdict") != rows[k]["verdict"])
            figs[part] = {"full": summarise(rows), "thinned": summarise(trows), "changed": changed,
                          "rows": rows, "thin_rows": trows}
    return figs


def shown(part: str, f: dict) -> dict:
    """What is printed of a part's figures: the holdout part's file names (verdicts changed by
    thinning, files that failed to replay) only as counts, so that nobody tuning reads them."""
    out = {k: v for k, v in f.items() if k not in ("rows", "thin_rows")}
    if part == "holdout":
        out["changed"] = len(out["changed"])
        for cad in ("full", "thinned"):
            out[cad] = dict(out[cad], failed=len(out[cad].get("failed") or []))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=PARTS, action="append", help="only this part (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--losswatch", type=Path, default=LOSSWATCH,
                    help="the losswatch command to replay with (e.g. an older checkout's, for a before/after)")
    ap.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(HERE.parent)}")
    ap.add_argument("--md", type=Path, help="also write the report of the parts run to this file (e.g. the tune "
                    "part's per-file verdicts while changing a detector)")
    ap.add_argument("--files", type=Path, help="score only the corpus files listed in this file (one path "
                    "relative to bench/real/ per line: a new intake, scored before any detector change); "
                    "implies --no-write")
    a = ap.parse_args(argv)
    if not SCORER.exists():
        print(f"real_logs: no scorer at {SCORER} (set LOSSWATCH_SCORE_REAL)", file=sys.stderr)
        return 2
    parts = tuple(a.part or PARTS)
    only = None
    if a.files is not None:
        only = {line.strip() for line in a.files.read_text().splitlines() if line.strip()}
        a.no_write = True
    try:
        figs = run(parts, a.losswatch, only)
    except ValueError as e:
        print(f"real_logs: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({p: shown(p, f) for p, f in figs.items()}, indent=1))
    else:
        for part, f in figs.items():
            for cad in ("full", "thinned"):
                s = f[cad]
                print(f"{part:8s} {cad:8s} problems right {_pct(s['problems_right'], s['problems'])}; "
                      f"healthy false alarms {s['healthy_false_alarms']}/{s['healthy']}; spike warnings {s['spike_warnings_on_healthy']}")
            changed = shown(part, f)["changed"]
            print(f"{part:8s} verdicts changed by thinning: "
                  + (f"{changed}" if isinstance(changed, int) else f"{len(changed)} {changed[:6]}"))
    if not a.no_write and set(parts) == set(PARTS):
        RESULTS.write_text(report(figs))
    if a.md:
        a.md.write_text(report(figs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
