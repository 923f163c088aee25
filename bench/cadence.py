"""The detection benchmark at other cadences: every run's log thinned to every 10th and every
50th row, and cut to a short excerpt, scored against the same labels as the full log.

Usage::

    .venv/bin/python bench/cadence.py        # writes bench/results/detection-cadence.md

A user's log is rarely one row per step: trainers log every 10-50 steps, and a log pasted into an
issue starts a few rows before the trouble. Each variant keeps the labels (they are in steps):

* ``every K``: rows whose step is a multiple of K, plus the row of the first non-finite loss (a
  NaN is logged when it happens: it is what the run prints before it dies);
* ``excerpt``: the log from 30 rows before its event (the first NaN, the step the run is lost,
  the onset of a schedule bug or of overfitting) to the end; a run without an event, from its
  middle row (healthy steps are then counted from there).

Figures: NaN recall, divergence recall and median lead, LR too high / too low F1, false alarms
per 10,000 healthy steps and action direction, per variant, next to the full log's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import score as scorer  # noqa: E402

RESULTS = HERE / "results" / "detection-cadence.md"
EXCERPT_BEFORE = 30


def thinned(k: int):
    def cut(rid: str, lab: dict, cols: dict) -> dict:
        keep = [i for i, s in enumerate(cols["step"]) if s % k == 0 or s == lab.get("nan_step")]
        return {c: [v[i] for i in keep] for c, v in cols.items()}
    return cut


def _event_step(lab: dict) -> int | None:
    ev = lab.get("evidence") or {}
    cands = [lab.get("nan_step"), lab.get("lost_step")] + \
        [ev[c].get("onset_step") for c in ("lr_schedule_bug", "overfitting") if c in ev]
    cands = [s for s in cands if s is not None]
    return min(cands) if cands else None


def excerpt_start(lab: dict, steps: list[int]) -> int:
    """The first row an excerpt keeps."""
    ev = _event_step(lab)
    if ev is None:
        return len(steps) // 2
    row = next((i for i, s in enumerate(steps) if s >= ev), len(steps))
    return max(0, row - EXCERPT_BEFORE)


def excerpt(rid: str, lab: dict, cols: dict) -> dict:
    r0 = excerpt_start(lab, cols["step"])
    return {c: v[r0:] for c, v in cols.items()}


def excerpt_labels(labels: dict) -> dict:
    """Labels with the healthy runs' step counts cut to what their excerpt spans."""
    from labels import read_run

    out = {}
    for rid, lab in labels.items():
        lab = dict(lab)
        if "healthy" in lab["conditions"]:
            steps = read_run(scorer.RUNS_DIR / f"{rid}.csv")["step"]
            r0 = excerpt_start(lab, steps)
            lab["n_steps"] = steps[-1] - steps[r0] + 1
        out[rid] = lab
    return out


def row(name: str, fig: dict) -> str:
    c = fig["conditions"]
    f = scorer._f
    return (f"| {name} | {fig['records']:,} | {f(c['nan']['recall'])} | {f(c['divergence']['recall'])} | "
            f"{f(c['divergence'].get('median_lead'), 1)} | {f(c['lr_too_high']['f1'])} | {f(c['lr_too_low']['f1'])} | "
            f"{f(fig['false_alarms_per_10k'])} | {fig['direction_right']}/{fig['direction_given']} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    labels = scorer.load_labels()
    figs = {"full log": scorer.score(labels)}
    for k in (10, 50):
        figs[f"every {k}th row"] = scorer.score(labels, variant=thinned(k))
    figs[f"excerpt ({EXCERPT_BEFORE} rows before the event)"] = scorer.score(excerpt_labels(labels), variant=excerpt)
    md = "\n".join([
        "# The detection benchmark at other cadences",
        "",
        f"The {figs['full log']['runs']} benchmark runs (bench/runs/) replayed as logs thinned to every "
        "10th and 50th step (the first NaN row kept) and as excerpts that begin 30 rows before the "
        "run's event (a healthy run: at its middle), scored against the same labels. Command: "
        "`.venv/bin/python bench/cadence.py`. The full log's figures are bench/results/detection.md's.",
        "",
        "| log | records | NaN recall | divergence recall | divergence median lead (steps) | LR too high F1 | "
        "LR too low F1 | false alarms / 10k healthy steps | direction |",
        "|---|---|---|---|---|---|---|---|---|",
        *[row(n, f) for n, f in figs.items()],
        "",
    ])
    if not args.no_write:
        RESULTS.write_text(md)
    if args.json:
        print(json.dumps({n: {k: v for k, v in f.items() if k != "per_run"} for n, f in figs.items()}, default=str))
    else:
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
