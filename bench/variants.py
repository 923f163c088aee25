"""Replay class-preserving variants of the tune part's real logs: verdicts per label, alarms on healthy logs.

Usage::

    .venv/bin/python bench/variants.py                                # every label
    .venv/bin/python bench/variants.py --label divergence --label spike
    .venv/bin/python bench/variants.py --label healthy --md bench/results/healthy-variants.md
    .venv/bin/python bench/variants.py --losswatch OTHER/.venv/bin/losswatch --json out.json

Each log of the tune part (problem logs labelled sure high or medium, and healthy logs) is
replayed as it is and as the variants of bench/log_variants.py that keep its class, through
``losswatch replay`` the way ../shared/tools/score_real.py replays a corpus file, and judged by
that scorer's rules (the same as bench/real_logs.py). Printed: right verdicts / variants per
label and variant kind, the variants with a wrong verdict; for healthy logs, every alarm that
changes the LR, rolls back or stops, by rule and by variant (``--md`` writes that table).
``--json`` writes every file's verdict per variant, with the healthy variants' alarms.

Only the tune part is read (bench/real/split.py): holdout files are never opened here. Nothing
is written to the corpus.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "real"))
from split import part_of  # noqa: E402

import log_variants  # noqa: E402
import real_logs  # noqa: E402


def _scorer():
    spec = importlib.util.spec_from_file_location("score_real", real_logs.SCORER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tune_logs(labels: set[str] | None, only: str = "") -> list[tuple[str, dict]]:
    """The tune part's logs to vary: problem logs labelled sure high or medium, healthy logs."""
    out = []
    for rel, lab in sorted(real_logs.load_labels().items()):
        if part_of(rel) != "tune" or only not in rel or (labels and lab["label"] not in labels):
            continue
        if lab["label"] != "healthy" and lab.get("sure") not in ("high", "medium"):
            continue
        out.append((rel, lab))
    return out


def read_log(rel: str) -> tuple[list[str], list[dict]]:
    if part_of(rel) != "tune":
        raise ValueError(f"{rel} is in the holdout part")
    with open(real_logs.source_path(rel), newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), [r for r in reader if (r.get("step") or "").strip()]


def alarms(scorer, events: list[dict]) -> list[dict]:
    """The events a healthy log must not draw: raised or escalated, warning or worse, with an
    action that changes the LR, rolls back or stops (the scorer's ``direction``)."""
    out = []
    for e in events:
        a = e.get("action")
        if e.get("event") in ("raised", "escalated") and e.get("severity") in ("warning", "critical") \
                and scorer.direction(a) is not None:
            out.append({"kind": e["kind"], "rule": (e.get("evidence") or {}).get("rule") or e.get("detector", "-"),
                        "event": e["event"], "step": e["step"], "severity": e["severity"],
                        "action": f"{a.get('type')} {a.get('factor', '')}".strip(),
                        "message": e.get("message", "")})
    return out


def run(losswatch: Path, logs: list[tuple[str, dict]]) -> list[dict]:
    """One row per (file, variant): its label, verdict and (healthy logs) alarms."""
    scorer = _scorer()
    jobs = []
    for rel, lab in logs:
        fields, rows = read_log(rel)
        onset = int(lab.get("onset") or 0)
        for name, v in log_variants.variants(fields, rows, lab["label"], onset).items():
            jobs.append((rel, lab["label"], name, *v))

    def judge(job) -> dict:
        rel, label, name, fields, rows, onset = job
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "log.csv")
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
            events, _ = scorer.replay(str(losswatch), path)
            row = {"file": rel, "label": label, "variant": name}
            if events is None:
                return dict(row, verdict="failed", alarms=[])
            v = scorer.verdict(label, onset, events, scorer.rows_of(path))[0]
            return dict(row, verdict=v, alarms=alarms(scorer, events) if label == "healthy" else [])

    with ThreadPoolExecutor(max_workers=2) as pool:  # one replay per core
        return list(pool.map(judge, jobs))


def per_label(rows: list[dict]) -> dict[str, dict[str, list[int]]]:
    """``{label: {variant: [right, n]}}``, with ``all`` over every variant."""
    out: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        by = out.setdefault(r["label"], {})
        for key in (r["variant"], "all"):
            c = by.setdefault(key, [0, 0])
            c[0] += r["verdict"] == "right"
            c[1] += 1
    return out


def healthy_report(rows: list[dict]) -> str:
    """The healthy logs' variants as markdown: alarms by rule (first alarm of each variant) and
    by variant, then every variant that got one."""
    healthy = [r for r in rows if r["label"] == "healthy" and r["variant"] != "orig"]
    bad = [r for r in healthy if r["alarms"]]
    by_rule = Counter(f"{r['alarms'][0]['kind']}/{r['alarms'][0]['rule']}" for r in bad)
    by_variant = Counter(r["variant"] for r in bad)
    lines = [
        "# Class-preserving variants of the healthy tune logs",
        "",
        f"Each of the {len({r['file'] for r in healthy})} healthy logs of the real-log corpus's tune part, "
        "replayed as variants that keep it healthy (thinned, cut, other units, fewer columns, rows written "
        "again: "
        "bench/log_variants.py says which). Command: `.venv/bin/python bench/variants.py --label healthy "
        "--md bench/results/healthy-variants.md`.",
        "",
        f"Variants replayed: {len(healthy)}; with an alarm that changes the LR, rolls back or stops: "
        f"**{len(bad)}**.",
        "",
        "| first alarm (kind/rule or detector) | variants |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in by_rule.most_common()],
        "",
        "| variant | with an alarm |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in by_variant.most_common()],
        "",
        "| variant | file | step | alarm | action |",
        "|---|---|---|---|---|",
    ]
    for r in bad:
        e = r["alarms"][0]
        lines.append(f"| {r['variant']} | {r['file']} | {e['step']} | {e['kind']}/{e['rule']} {e['severity']} | "
                     f"{e['action']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", action="append", help="only logs with this label (repeatable; default every label)")
    ap.add_argument("--only", default="", help="only files whose path contains this")
    ap.add_argument("--losswatch", type=Path, default=real_logs.LOSSWATCH,
                    help="the losswatch command to replay with (e.g. another checkout's, for a before/after)")
    ap.add_argument("--json", type=Path, help="write every (file, variant) row here: verdict, healthy alarms")
    ap.add_argument("--md", type=Path, help="write the healthy logs' alarms as markdown here "
                    "(bench/results/healthy-variants.md)")
    ap.add_argument("--list", action="store_true", help="print every healthy variant's first alarm")
    a = ap.parse_args(argv)
    if not real_logs.SCORER.exists():
        print(f"variants: no scorer at {real_logs.SCORER} (set LOSSWATCH_SCORE_REAL)", file=sys.stderr)
        return 2
    rows = run(a.losswatch, tune_logs(set(a.label or ()), a.only))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    for label, by in sorted(per_label(rows).items()):
        files = len({r["file"] for r in rows if r["label"] == label})
        print(f"{label} ({files} logs): " + ", ".join(f"{k} {c[0]}/{c[1]}" for k, c in by.items()))
    for r in rows:
        if r["label"] != "healthy" and r["verdict"] != "right":
            print(f"  {r['label']} {r['file']}: {r['variant']} {r['verdict']}")
    healthy = [r for r in rows if r["label"] == "healthy" and r["variant"] != "orig"]
    if healthy:
        bad = [r for r in healthy if r["alarms"]]
        print(f"healthy variants replayed: {len(healthy)}; with an LR-changing/rollback/stop alarm: {len(bad)}")
        print("first alarm by rule: " + ", ".join(f"{k} {v}" for k, v in Counter(
            f"{r['alarms'][0]['kind']}/{r['alarms'][0]['rule']}" for r in bad).most_common()))
        if a.list:
            for r in bad:
                e = r["alarms"][0]
                print(f"  {r['variant']:12s} {r['file']}: step {e['step']} {e['kind']}/{e['rule']} "
                      f"{e['severity']} {e['action']}: {e['message'][:160]}")
        if a.md:
            a.md.write_text(healthy_report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
