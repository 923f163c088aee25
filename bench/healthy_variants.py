"""Replay class-preserving variants of the tune part's healthy logs; list every alarm that would
change the LR, roll back or stop.

Usage::

    .venv/bin/python bench/healthy_variants.py                 # table of alarms by rule
    .venv/bin/python bench/healthy_variants.py --list          # every alarm, file by file
    .venv/bin/python bench/healthy_variants.py --losswatch OTHER/losswatch --json out.json

A healthy run stays healthy when it is logged less often, cut to an excerpt, measured in other
units or with fewer columns; a rule that alarms on such a variant is brittle in a way the corpus's
own files may not show (other users log otherwise). Variants, generated in memory and replayed
through ``losswatch replay`` the way ../shared/tools/score_real.py replays a corpus file:

* ``thin2`` ``thin3`` ``thin5`` ``thin10``: every k-th row (a log written every k steps);
* ``last50``: the last half of the rows (a log that starts mid-run, or a resumed run);
* ``first8`` ``first15`` ``first30``: only the first rows (an excerpt pasted into a thread);
* ``lossx0.1`` ``lossx10`` ``loss+1`` ``loss+5``: loss and val_loss in other units, or with a
  constant added (a loss with a regulariser or an entropy floor);
* ``stepx10``: the step column x10 (a log that counts micro-batches);
* ``no-grad_norm`` ``no-lr`` ``no-val_loss`` ``loss-only``: fewer columns.

A variant identical to one already replayed for the same file (a column that was empty, a cut
that keeps every row) is skipped. Only tune-part files are read (bench/real/split.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "real"))
from split import part_of  # noqa: E402

from real_logs import LOSSWATCH, load_labels, source_path  # noqa: E402

LOSS_COLUMNS = ("loss", "val_loss")


def _num(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _map_loss(rows: list[dict], f) -> list[dict]:
    out = []
    for r in rows:
        r = dict(r)
        for c in LOSS_COLUMNS:
            x = _num(r.get(c, ""))
            if x is not None:
                r[c] = repr(f(x))
        out.append(r)
    return out


def _drop(rows: list[dict], cols: tuple[str, ...]) -> list[dict]:
    return [{k: ("" if k in cols else v) for k, v in r.items()} for r in rows]


def _steps_x10(rows: list[dict]) -> list[dict]:
    return [dict(r, step=str(int(float(r["step"])) * 10)) for r in rows]


VARIANTS = {
    "thin2": lambda rows: rows[::2],
    "thin3": lambda rows: rows[::3],
    "thin5": lambda rows: rows[::5],
    "thin10": lambda rows: rows[::10],
    "last50": lambda rows: rows[len(rows) // 2:],
    "first8": lambda rows: rows[:8],
    "first15": lambda rows: rows[:15],
    "first30": lambda rows: rows[:30],
    "lossx0.1": lambda rows: _map_loss(rows, lambda x: x * 0.1),
    "lossx10": lambda rows: _map_loss(rows, lambda x: x * 10),
    "loss+1": lambda rows: _map_loss(rows, lambda x: x + 1),
    "loss+5": lambda rows: _map_loss(rows, lambda x: x + 5),
    "stepx10": _steps_x10,
    "no-grad_norm": lambda rows: _drop(rows, ("grad_norm",)),
    "no-lr": lambda rows: _drop(rows, ("lr",)),
    "no-val_loss": lambda rows: _drop(rows, ("val_loss",)),
    "loss-only": lambda rows: _drop(rows, ("grad_norm", "lr", "val_loss")),
}


def changes_lr(action: dict | None) -> bool:
    """The scorer's test for a healthy log: an action that moves the LR, rolls back or stops."""
    if not isinstance(action, dict):
        return False
    t, f = action.get("type"), action.get("factor")
    if t == "scale_lr" and isinstance(f, (int, float)):
        return f != 1
    return t in ("rollback", "stop", "add_warmup")


def healthy_tune_files() -> list[str]:
    return sorted(k for k, v in load_labels().items() if v["label"] == "healthy" and part_of(k) == "tune")


def read_rows(rel: str) -> tuple[list[str], list[dict]]:
    with open(source_path(rel), newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), [r for r in reader if (r.get("step") or "").strip()]


def as_csv(fields: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def alarms(losswatch: Path, path: Path) -> list[dict]:
    p = subprocess.run([str(losswatch), "replay", str(path), "--format", "jsonl"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode not in (0, 1):
        return [{"kind": "failed", "rule": (p.stderr.strip().splitlines() or ["?"])[-1], "step": None}]
    out = []
    for line in p.stdout.splitlines():
        if not line.startswith("{"):
            continue
        e = json.loads(line)
        if e.get("event") in ("raised", "escalated") and e.get("severity") in ("warning", "critical") \
                and changes_lr(e.get("action")):
            a = e["action"]
            out.append({"kind": e["kind"], "rule": (e.get("evidence") or {}).get("rule") or e.get("detector", "-"),
                        "event": e["event"], "step": e["step"], "severity": e["severity"],
                        "action": f"{a.get('type')} {a.get('factor', '')}".strip(),
                        "message": e.get("message", "")})
    return out


def run(losswatch: Path, only: str = "") -> list[dict]:
    jobs = []
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        for rel in healthy_tune_files():
            if only not in rel:
                continue
            fields, rows = read_rows(rel)
            seen = {as_csv(fields, rows)}
            for name, make in VARIANTS.items():
                text = as_csv(fields, make(rows))
                if text in seen or text.count("\n") < 2:
                    continue
                seen.add(text)
                path = Path(tmp) / name / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                jobs.append((rel, name, pool.submit(alarms, losswatch, path)))
        return [{"file": rel, "variant": name, "alarms": fut.result()} for rel, name, fut in jobs]


def report(rows: list[dict]) -> str:
    """The figures as markdown: alarms by rule (first alarm of each variant) and by variant, then
    every variant that got one."""
    bad = [r for r in rows if r["alarms"]]
    by_rule = Counter(f"{r['alarms'][0]['kind']}/{r['alarms'][0]['rule']}" for r in bad)
    by_variant = Counter(r["variant"] for r in bad)
    lines = [
        "# Class-preserving variants of the healthy tune logs",
        "",
        f"Each of the {len({r['file'] for r in rows})} healthy logs of the real-log corpus's tune part, "
        "replayed as variants that keep it healthy (thinned, cut, other units, fewer columns: "
        "bench/healthy_variants.py says which). Command: `.venv/bin/python bench/healthy_variants.py "
        "--md bench/results/healthy-variants.md`.",
        "",
        f"Variants replayed: {len(rows)}; with an alarm that changes the LR, rolls back or stops: "
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
    ap.add_argument("--losswatch", type=Path, default=LOSSWATCH)
    ap.add_argument("--only", default="", help="only files whose path contains this")
    ap.add_argument("--list", action="store_true", help="print every alarm")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    ap.add_argument("--md", type=Path, help="write the table and the list as markdown here "
                    "(bench/results/healthy-variants.md)")
    a = ap.parse_args(argv)
    rows = run(a.losswatch, a.only)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if r["alarms"]]
    by_rule = Counter(f"{r['alarms'][0]['kind']}/{r['alarms'][0]['rule']}" for r in bad)
    by_variant = Counter(r["variant"] for r in bad)
    print(f"variants replayed: {len(rows)} of {len({r['file'] for r in rows})} healthy tune files; "
          f"with an LR-changing/rollback/stop alarm: {len(bad)}")
    print("first alarm by rule: " + ", ".join(f"{k} {v}" for k, v in by_rule.most_common()))
    print("by variant: " + ", ".join(f"{k} {v}" for k, v in by_variant.most_common()))
    if a.md:
        a.md.write_text(report(rows))
    if a.list:
        for r in bad:
            e = r["alarms"][0]
            print(f"{r['variant']:12s} {r['file']}: step {e['step']} {e['kind']}/{e['rule']} {e['severity']} "
                  f"{e['action']}: {e['message'][:160]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
