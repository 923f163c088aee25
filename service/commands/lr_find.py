"""``losswatch lr-find SWEEP``: analyse a recorded LR range test and print the suggestion.

SWEEP is a CSV (header with ``lr`` and ``loss``) or JSON lines (keys ``lr`` and ``loss``), such
as the file ``losswatch.client.lr_range_test`` writes. Exit status: 0 = a suggestion, 2 = the
file could not be read or the sweep is unusable (the message says why).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP", help="CSV or JSON-lines file with columns lr and loss")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="json: one object {suggested_lr, min_lr, max_lr, reason, ...}")
    parser.add_argument("--smooth-decades", type=float, default=0.15,
                        help="width of the Gaussian smoothing in decades of LR (default 0.15)")


def run(args: argparse.Namespace) -> int:
    from losswatch.detectors.lr_finder import read_sweep, suggest_lr

    try:
        lrs, losses = read_sweep(args.sweep)
        s = suggest_lr(lrs, losses, smooth_decades=args.smooth_decades)
    except FileNotFoundError:
        print(f"losswatch lr-find: {args.sweep}: no such file", file=sys.stderr)
        return 2
    except (ValueError, UnicodeDecodeError) as e:
        print(f"losswatch lr-find: {e}", file=sys.stderr)
        return 2
    if args.format == "json":
        d = s.to_dict()
        out = {"suggested_lr": d.pop("suggested_lr"), "min_lr": d.pop("min_lr"), "max_lr": d.pop("max_lr"),
               "reason": d.pop("reason"), **d}
        print(json.dumps(out))
    else:
        print(f"suggested lr : {s.suggested_lr:.3g}")
        print(f"one-cycle / cyclic bounds: min_lr {s.min_lr:.3g}  max_lr {s.max_lr:.3g}")
        print(f"confidence   : {s.confidence}")
        print(f"why          : {s.reason}")
    return 0
