"""Replay the real public training logs in ../shared/data/public-logs/ through the Engine.

Usage::

    .venv/bin/python bench/public_logs.py [--dir PATH] [--json]

What happened in each run comes from its SOURCES.md (the chronicles and records the logs were
copied from), summarised in :data:`EXPECTED`: healthy GPT-2 speedrun runs whose one-step data
spikes need no LR action, BLOOM runs whose spikes recovered on their own, and BLOOM 104B runs
that really diverged. Checks:

* healthy and self-recovering runs: no warning-or-worse alert whose action is ``scale_lr``;
* every BLOOM divergence caught: a warning-or-worse alert of kind divergence, grad_explosion or
  nan by the last logged row (the excerpts are short: that is all the data there is).

Writes bench/results/public-logs.md. The logs are replayed with no metadata (no declared
schedule: these are other people's runs) in chunks, like bench/score.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from labels import read_run  # noqa: E402
from score import episodes, replay  # noqa: E402

#: the shared data folder next to the checkout; LOSSWATCH_PUBLIC_LOGS points elsewhere
DEFAULT_DIR = Path(os.environ.get("LOSSWATCH_PUBLIC_LOGS", HERE.parent.parent / "shared" / "data" / "public-logs"))
RESULTS = HERE / "results" / "public-logs.md"
CATCH_KINDS = ("divergence", "grad_explosion", "nan")

#: file stem -> (what happened per SOURCES.md, the step the chronicle names, if any)
EXPECTED = {
    "mng-adamw-baseline-124m": ("healthy", None),
    "mng-llmc-gpt2-124m": ("healthy", None),
    "mng-medium-350m-llmc-valonly": ("healthy", None),
    "bloom-tr11-176B-healthy-42780": ("healthy", None),
    "mng-muon-124m": ("spike_recovered", 919),
    "mng-soap-124m": ("spike_recovered", 919),
    "mng-optimizers-adam-124m": ("spike_recovered", 919),
    "mng-valueembed-124m": ("spike_recovered", 918),
    "mng-quantized-fp4-124m": ("spike_recovered", 201),
    "mng-scaleup-1p5b": ("spike_recovered", 215),
    "mng-scaleup-1p5b-run2": ("spike_recovered", None),
    "bloom-tr11-176B-first-spike-recovered": ("spike_recovered", 31219),
    "bloom-tr1-13B-huge-spike": ("spike_recovered", 29050),
    "bloom-tr8b-104B-embnorm7-spike": ("spike_recovered", 17062),
    "bloom-tr8-104B-exp1-spike-then-stuck": ("divergence", 7010),
    "bloom-tr8-104B-exp2-divergence": ("divergence", 6920),
    "bloom-tr8-104B-exp12-spike-then-diverge": ("divergence", 8741),
}


def check_file(path: Path, chunk: int = 256) -> dict:
    """Replay one public log; returns what fired and whether the check for its kind passed."""
    stem = path.stem
    expected, ref_step = EXPECTED.get(stem, ("unknown", None))
    cols = read_run(path)
    eps = episodes(replay(stem, cols, None, chunk=chunk))
    warn = sorted((e for e in eps.values() if e["warn_at"] is not None), key=lambda e: e["warn_at"])
    scale_lr = [e for e in warn if (e["warn_action"] or {}).get("type") == "scale_lr"]
    catch = [e for e in warn if e["kind"] in CATCH_KINDS]
    if expected in ("healthy", "spike_recovered"):
        ok = not scale_lr
    elif expected == "divergence":
        ok = bool(catch)
    else:
        ok = None
    return {
        "file": path.name,
        "expected": expected,
        "reference_step": ref_step,
        "rows": len(cols["step"]),
        "steps": [cols["step"][0], cols["step"][-1]] if cols["step"] else None,
        "warning_alerts": [{"kind": e["kind"], "step": e["warn_at"], "severity": e["max_sev"],
                            "action": e["warn_action"], "message": e["message"]} for e in warn],
        "info_alerts": sum(1 for e in eps.values() if e["warn_at"] is None),
        "scale_lr_alerts": len(scale_lr),
        "caught_at": catch[0]["warn_at"] if catch else None,
        "ok": ok,
    }


def run_all(directory: Path = DEFAULT_DIR, chunk: int = 256) -> dict:
    files = sorted(directory.glob("*.csv"))
    rows = [check_file(p, chunk=chunk) for p in files]
    healthy_like = [r for r in rows if r["expected"] in ("healthy", "spike_recovered")]
    div = [r for r in rows if r["expected"] == "divergence"]
    return {
        "directory": str(directory),
        "files": rows,
        "no_scale_lr_on_healthy_or_recovered": all(r["ok"] for r in healthy_like),
        "healthy_or_recovered_with_scale_lr": [r["file"] for r in healthy_like if not r["ok"]],
        "all_divergences_caught": bool(div) and all(r["ok"] for r in div),
        "divergences_missed": [r["file"] for r in div if not r["ok"]],
        "unknown_files": [r["file"] for r in rows if r["expected"] == "unknown"],
    }


def _action(a: dict | None) -> str:
    if not a:
        return "-"
    params = ", ".join(f"{k}={v}" for k, v in a.items() if k not in ("type", "reason"))
    return f"{a.get('type')}({params})" if params else str(a.get("type"))


def report(res: dict) -> str:
    lines = [
        "# Public training logs through the detectors",
        "",
        "Real logs from other people's runs (../shared/data/public-logs/, provenance in its SOURCES.md), "
        "replayed online through `losswatch.detectors.Engine` with no metadata. "
        "Command: `.venv/bin/python bench/public_logs.py`.",
        "",
        f"* no scale_lr (warning or worse) on healthy and self-recovering runs: "
        f"**{'yes' if res['no_scale_lr_on_healthy_or_recovered'] else 'no'}**"
        + (f" (violations: {', '.join(res['healthy_or_recovered_with_scale_lr'])})" if res['healthy_or_recovered_with_scale_lr'] else ""),
        f"* every BLOOM divergence caught: **{'yes' if res['all_divergences_caught'] else 'no'}**"
        + (f" (missed: {', '.join(res['divergences_missed'])})" if res['divergences_missed'] else ""),
        "",
        "| file | what happened | rows | warning/critical alerts (kind@step: action) | info | check |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["files"]:
        # the alerts with an LR action first: they are what the checks are about
        shown = sorted(r["warning_alerts"], key=lambda a: (a["action"] or {}).get("type") != "scale_lr")
        al = "; ".join(f"{a['kind']}@{a['step']}: {_action(a['action'])}" for a in shown[:6])
        if len(r["warning_alerts"]) > 6:
            al += f"; (+{len(r['warning_alerts']) - 6} more)"
        what = r["expected"] + (f" ({r['reference_step']})" if r["reference_step"] is not None else "")
        check = "-" if r["ok"] is None else ("pass" if r["ok"] else "**FAIL**")
        lines.append(f"| {r['file']} | {what} | {r['rows']} | {al or '-'} | {r['info_alerts']} | {check} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=str(DEFAULT_DIR), help="folder of public-log CSVs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/public-logs.md")
    args = ap.parse_args(argv)
    d = Path(args.dir)
    if not d.is_dir():
        print(f"public_logs: no such folder: {d}", file=sys.stderr)
        return 2
    res = run_all(d)
    md = report(res)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(md)
    print(json.dumps(res, indent=1, default=str) if args.json else md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
