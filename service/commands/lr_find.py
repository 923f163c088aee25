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
    parser.add_argument("--plot", metavar="PNG", help="write the sweep with the suggestion marked (needs matplotlib)")
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
    if args.plot:
        try:
            _plot(lrs, losses, s, args.plot)
        except ImportError:
            print("losswatch lr-find: matplotlib is not installed: no plot", file=sys.stderr)
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


def _plot(lrs, losses, s, path: str) -> None:
    """The sweep (log LR) with the suggested LR, the one-cycle bounds and the minimum marked."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(a, b) for a, b in zip(lrs, losses) if math.isfinite(b)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], ".-", lw=0.8, ms=3, color="0.4", label="sweep")
    ax.set_xscale("log")
    ax.axvspan(s.min_lr, s.max_lr, color="tab:green", alpha=0.12, label=f"one-cycle range {s.min_lr:.2g}..{s.max_lr:.2g}")
    ax.axvline(s.suggested_lr, color="tab:green", lw=2, label=f"suggested {s.suggested_lr:.3g}")
    if s.min_loss_lr:
        ax.axvline(s.min_loss_lr, color="tab:orange", ls="--", label=f"min loss {s.min_loss_lr:.3g}")
    if s.exploded_at_lr:
        ax.axvline(s.exploded_at_lr, color="tab:red", ls=":", label=f"exploded {s.exploded_at_lr:.3g}")
    finite = sorted(p[1] for p in pts)
    if finite:
        lo, hi = finite[0], finite[int(0.95 * (len(finite) - 1))]
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-12), hi + 0.3 * (hi - lo + 1e-12))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title("LR range test")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
