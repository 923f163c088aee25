"""How much of "verdicts changed by thinning" is where the thinning grid falls: the tune part's
thinned corpus (bench/real_logs.py) at other phases of its grid.

Usage::

    .venv/bin/python bench/thin_phases.py --phases 0 3 7 [--losswatch PATH] [--md OUT]

bench/real_logs.py thins every file of 100 rows or more to each stream once per 10 logging
intervals, on one grid of steps that starts at step 0 (log_variants.thin_streams). A logger
that writes 10 times less often could as well have started its grid 3 or 7 intervals later: the
same run, other rows kept. Here the grid moves by ``phase`` logging intervals
(real_logs.thin_rows), the onset row and the 3 rows after it are kept whole as there, and each
phase's verdicts are compared with the full log's. Phase 0 is bench/real_logs.py's thinned corpus.

A verdict that changes at one phase and not at another rests on which rows were kept, not on
the cadence: the spread over phases is the noise floor of the thinning figure.

TUNE PART ONLY: the holdout part is never read here (bench/real/split.py).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from real_logs import LOSSWATCH, THIN_EVERY, THIN_MIN_ROWS, load_labels, part_of, score, source_path  # noqa: E402


def verdicts(labels: dict[str, dict], phase: int | None, losswatch: Path) -> dict[str, str]:
    """score_real.py's verdict per file: the full logs (``phase`` None) or thinned at ``phase``."""
    rows = score(labels, phase is not None, losswatch, phase or 0)
    return {f: r["verdict"] for f, r in rows.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phases", type=int, nargs="+", default=[0, 3, 7],
                    help=f"grid phases in logging intervals (0 to {THIN_EVERY - 1})")
    ap.add_argument("--losswatch", type=Path, default=LOSSWATCH)
    ap.add_argument("--md", type=Path, help="write the changed verdicts per phase here as markdown")
    a = ap.parse_args(argv)
    labels = {}
    for rel, lab in load_labels().items():
        if part_of(rel) != "tune":
            continue  # the holdout part stays untouched
        with open(source_path(rel), newline="") as f:
            if sum(1 for r in csv.DictReader(f) if (r.get("step") or "").strip()) >= THIN_MIN_ROWS:
                labels[rel] = lab
    full = verdicts(labels, None, a.losswatch)
    lines = [f"# Verdicts changed by thinning, by grid phase (tune part, {len(labels)} files of "
             f"{THIN_MIN_ROWS} rows or more)", "",
             "Command: `.venv/bin/python bench/thin_phases.py --phases " + " ".join(map(str, a.phases)) + "`", "",
             "| phase | changed | file (label, sure): full -> thinned |", "|---|---|---|"]
    for phase in a.phases:
        thin = verdicts(labels, phase, a.losswatch)
        changed = sorted(f for f in full if thin.get(f) != full[f])
        print(f"phase {phase}: {len(changed)} verdicts changed by thinning")
        for f in changed:
            lab = labels[f]
            print(f"    {f} ({lab['label']}, {lab['sure']}): {full[f]} -> {thin.get(f)}")
        lines.append(f"| {phase} | {len(changed)} | " + "<br>".join(
            f"{f} ({labels[f]['label']}, {labels[f]['sure']}): {full[f]} -> {thin.get(f)}" for f in changed) + " |")
    if a.md:
        a.md.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
