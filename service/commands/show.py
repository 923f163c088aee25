"""``losswatch show RUN``: one run at a glance in the terminal.

The summary (health, steps, last values, metadata, the current advice), the active alerts with
their message and advice (the action and its reason), a sparkline of the loss (log scale, NaN and
infinities marked), the recent alert history and the actions the client reported. ``--png FILE``
also draws loss, grad-norm and LR over steps with matplotlib (``pip install 'losswatch[plot]'``).

Exit status: 0; 1 for an unknown run or a refused token; 2 when no service answered or
matplotlib is missing for ``--png``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from typing import Any

from losswatch.service.remote import LookError, Service, add_run_arguments, add_service_arguments, to_float
from losswatch.service.terminal import NOT_FINITE, action_text, ago, column_of, num, sparkline, table, worst_first

SERIES_POINTS_PER_COLUMN = 8  # minmax keeps <= 4 points a bucket: two buckets a column
PNG_MAX_POINTS = 4000
EXIT_MISSING_EXTRA = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--history", type=_positive, default=10, help="alert events and actions to list (default 10)")
    p.add_argument("--width", type=_positive, default=None,
                   help="sparkline width in characters (default: the terminal's, at most 100)")
    p.add_argument("--png", metavar="FILE", help="also write a plot of loss, grad-norm and LR (needs matplotlib)")
    add_service_arguments(p)


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def run(args: argparse.Namespace) -> int:
    width = args.width or max(20, min(100, shutil.get_terminal_size((80, 24)).columns - 4))
    if args.png:  # before any request: a missing extra is said at once
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("losswatch show --png needs matplotlib, from the plot extra: pip install 'losswatch[plot]'",
                  file=sys.stderr)
            return EXIT_MISSING_EXTRA
    try:
        service = Service.from_args(args)
        try:
            project = service.project_of(args.run_id, args.project)
            summary = service.run(args.run_id, project)
            history = service.alerts(args.run_id, project)
            series = service.series(args.run_id, SERIES_POINTS_PER_COLUMN * width, project)["series"]
            detail = service.series(args.run_id, PNG_MAX_POINTS, project)["series"] if args.png else None
        finally:
            service.close()
    except LookError as e:
        print(f"losswatch show: {e}", file=sys.stderr)
        return e.exit_code
    print(render(summary, history, series, width, args.history))
    if detail is not None:
        write_png(args.png, args.run_id, detail, history["alerts"])
        print(f"\nplot written to {args.png}")
    return 0


# ----------------------------------------------------------------------------- text
def render(summary: dict[str, Any], history: dict[str, Any], series: dict[str, Any], width: int,
           n_history: int) -> str:
    out = [f"run {summary['run_id']}  project {summary['project']}  health {summary['health'].upper()}"]
    out.append(f"  steps stored {summary['n_steps']}, last step {_or_dash(summary['last_step'])}, "
               f"last seen {ago(summary.get('last_seen'))}")
    last = summary.get("last") or {}
    out.append("  last   " + "  ".join(f"{name} {num(to_float(last.get(key)))}" for key, name in
                                       (("loss", "loss"), ("grad_norm", "grad-norm"), ("lr", "lr"),
                                        ("val_loss", "val-loss"))))
    meta = {k: v for k, v in (summary.get("meta") or {}).items() if k in ("task", "model", "optimizer", "batch_size")}
    if meta:
        out.append("  meta   " + ", ".join(f"{k} {v}" for k, v in meta.items()))
    out.append("  advice " + _advice(summary.get("recommendation")))

    active = worst_first(summary.get("active_alerts") or [])
    out.append("")
    out.append(f"active alerts ({len(active)})" if active else "active alerts: none")
    for a in active:
        out.append(f"  {a['severity'].upper():8s} {a['kind']} since step {a['step']}: {a['message']}")
        out.append(f"           advice: {_advice(a.get('action'))}")

    out.append("")
    out.extend(_loss_lines(series, history["alerts"], width))

    alerts = sorted(history["alerts"], key=lambda a: (a["step"], a.get("raised_at", 0.0)))
    out.append("")
    if alerts:
        shown = alerts[-n_history:]
        out.append(f"alert history (last {len(shown)} of {len(alerts)})")
        rows = [(str(a["step"]), _or_dash(a.get("resolved_step")), a["severity"], a["kind"],
                 a.get("event", ""), a["message"]) for a in shown]
        out.append(_indent(table(("STEP", "RESOLVED", "SEVERITY", "KIND", "EVENT", "MESSAGE"), rows)))
    else:
        out.append("alert history: none")
    actions = history.get("actions") or []
    if actions:
        shown = actions[-n_history:]
        out.append("")
        out.append(f"actions reported by the client (last {len(shown)} of {len(actions)})")
        rows = [(str(r["step"]), action_text(r["action"]),
                 "dry run" if r.get("dry_run") else ("applied" if r["applied"] else "not applied"))
                for r in shown]
        out.append(_indent(table(("STEP", "ACTION", "STATUS"), rows)))
    return "\n".join(out)


def _loss_lines(series: dict[str, Any], alerts: list[dict[str, Any]], width: int) -> list[str]:
    steps, loss = series["step"], series["loss"]
    logged = [s for s, v in zip(steps, loss) if v is not None]
    if not logged:
        return ["loss: nothing logged yet"]
    line, log = sparkline(steps, loss, width)
    first, last = logged[0], logged[-1]
    finite = [v for v in loss if v is not None and math.isfinite(v)]
    scale = "log scale" if log else "linear scale (a value <= 0)"
    head = f"loss, steps {first}..{last}, {scale}"
    if finite:
        head += f", {num(min(finite))} .. {num(max(finite))}"
    if NOT_FINITE in line:
        head += f"; {NOT_FINITE} = NaN or infinite"
    marks = [" "] * len(line)
    for a in worst_first(alerts)[::-1]:  # the worst alert of a column is drawn last, so it shows
        if first <= a["step"] <= last:
            marks[column_of(a["step"], first, last, width)] = a["severity"][0].upper()
    out = [head, f"  {line}"]
    if any(m != " " for m in marks):
        out.append(f"  {''.join(marks).rstrip()}   (alerts raised: C critical, W warning, I info)")
    out.append(f"  step {first}".ljust(len(line) + 2 - len(str(last))) + str(last))
    return out


def _advice(action: dict[str, Any] | None) -> str:
    text = action_text(action)
    reason = (action or {}).get("reason")
    # a reason is shown with "none" too: it says why nothing is to be done (a raise withheld, a
    # note deferring to its incident's alert)
    return f"{text} - {reason}" if reason else text


def _or_dash(v: Any) -> str:
    return "-" if v is None else str(v)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# ----------------------------------------------------------------------------- PNG
def write_png(path: str, run_id: str, series: dict[str, Any], alerts: list[dict[str, Any]]) -> None:
    """Loss, grad-norm and LR over steps, one panel each (log where every value is positive);
    a non-finite value is a red x at the top of its panel; alerts are vertical lines."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    colours = {"critical": "tab:red", "warning": "tab:orange", "info": "tab:blue"}
    panels = (("loss", "loss"), ("grad_norm", "grad-norm"), ("lr", "LR"))
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(10, 7))
    for ax, (key, label) in zip(axes, panels):
        pts = [(s, v) for s, v in zip(series["step"], series[key]) if v is not None]
        good = [(s, v) for s, v in pts if math.isfinite(v)]
        bad = [s for s, v in pts if not math.isfinite(v)]
        if good:
            ax.plot([s for s, _ in good], [v for _, v in good], lw=0.8, color="tab:blue")
            if min(v for _, v in good) > 0:
                ax.set_yscale("log")
        if bad:
            top = max((v for _, v in good), default=1.0)
            ax.plot(bad, [top] * len(bad), "x", color="tab:red", label="NaN / infinite")
            ax.legend(loc="upper left", fontsize=8)
        for a in alerts:
            ax.axvline(a["step"], color=colours.get(a["severity"], "grey"), lw=0.8, alpha=0.6)
        ax.set_ylabel(label)
        if not pts:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="grey")
    axes[-1].set_xlabel("step")
    axes[0].set_title(f"{run_id}: alerts as vertical lines (red critical, orange warning)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
