"""``losswatch replay PATH``: a recorded run through the detectors, strictly online.

The records are fed to :class:`losswatch.detectors.Engine` in file order, in chunks, so an alert
printed for step t was raised from records up to t only, exactly as the live service would have
raised it. One line per alert event goes to stdout (JSON lines, or a table on a terminal); one
summary line goes to stderr. A file that cannot be read gets one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from losswatch.detectors.objective import objective_of
from losswatch.detectors.types import SEVERITY_RANK
from losswatch.detectors.wire import encode_floats
from losswatch.service.readers import FORMATS, ReadError, chunked, parse_tag_map, read_run

EXIT_READ_ERROR = 2
EXIT_ALERTED = 1  # only with --fail-on


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH",
                        help="recorded run: CSV, JSON lines, trainer_state.json, or TensorBoard event file/log directory")
    parser.add_argument("--input-format", choices=FORMATS, default=None,
                        help="override format detection (default: from the name and the content)")
    parser.add_argument("--format", dest="output_format", choices=("jsonl", "table"), default=None,
                        help="output: one JSON alert per line, or a table (default: table on a terminal, else jsonl)")
    parser.add_argument("--run-id", default=None, help="run id the alerts carry (default: the file's name without extension)")
    parser.add_argument("--meta", default=None,
                        help='run metadata as JSON or @file.json, e.g. \'{"lr_schedule": {"name": "cosine", ...}}\'')
    parser.add_argument("--tag-map", default=None,
                        help="TensorBoard tags for the fields, e.g. loss=train/my_loss,lr=opt/lr (added to the defaults)")
    parser.add_argument("--updates", action="store_true",
                        help="also print every update of an open alert (default: raised, escalated and resolved only)")
    parser.add_argument("--chunk-size", type=int, default=1024,
                        help="records per Engine.update_batch call (does not change the alerts; default 1024)")
    parser.add_argument("--fail-on", choices=("warning", "critical"), default=None,
                        help="exit 1 if an alert of this severity or worse was raised (for CI)")


def run(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    fmt = args.output_format or ("table" if out.isatty() else "jsonl")
    path = Path(args.path)
    run_id = args.run_id or _default_run_id(path)
    try:
        meta = _load_meta(args.meta)
        tag_map = parse_tag_map(args.tag_map)
    except ReadError as e:
        print(f"losswatch replay: {e}", file=sys.stderr)
        return EXIT_READ_ERROR
    if args.chunk_size < 1:
        print("losswatch replay: --chunk-size must be at least 1", file=sys.stderr)
        return EXIT_READ_ERROR

    from losswatch.detectors import Engine  # numpy: imported only once the arguments are good

    engine = Engine(run_id=run_id, meta=meta)
    printer = _TablePrinter(out) if fmt == "table" else _JsonlPrinter(out)
    raised: dict[str, str] = {}  # alert id -> worst severity
    n_read = n_ignored = 0
    first_step = last_step = None
    try:
        for chunk in chunked(read_run(path, args.input_format, tag_map), args.chunk_size):
            # the engine ignores steps at or below the last one; count them so the summary is honest
            for rec in chunk:
                if last_step is not None and rec.step <= last_step:
                    n_ignored += 1
                else:
                    last_step = rec.step
                    if first_step is None:
                        first_step = rec.step
            n_read += len(chunk)
            for alert in engine.update_batch(chunk):
                event = alert.event
                if alert.resolved_step is None:
                    prev = raised.get(alert.id)
                    if prev is None or SEVERITY_RANK[alert.severity] > SEVERITY_RANK[prev]:
                        raised[alert.id] = alert.severity
                if event == "updated" and not args.updates:
                    continue
                printer.emit(event, alert.to_dict())
    except ReadError as e:
        print(f"losswatch replay: {e}", file=sys.stderr)
        return EXIT_READ_ERROR
    except BrokenPipeError:
        _silence_broken_pipe()
        return 0
    try:
        printer.close()
    except BrokenPipeError:
        _silence_broken_pipe()
    if n_read == 0:
        print(f"losswatch replay: {path.name}: no records", file=sys.stderr)
        return EXIT_READ_ERROR

    print(_summary(path, n_read, n_ignored, first_step, last_step, raised, engine), file=sys.stderr)
    if args.fail_on and any(SEVERITY_RANK[s] >= SEVERITY_RANK[args.fail_on] for s in raised.values()):
        return EXIT_ALERTED
    return 0


def _summary(path: Path, n_read: int, n_ignored: int, first_step: int | None, last_step: int | None,
             raised: dict[str, str], engine: Any) -> str:
    by_sev = {s: sum(1 for v in raised.values() if v == s) for s in ("critical", "warning", "info")}
    parts = [f"{path.name}: {n_read} records read"]
    if n_ignored:
        parts.append(f"{n_ignored} ignored (duplicate or out-of-order steps)")
    parts.append(f"steps {first_step}..{last_step}")
    parts.append(f"{len(raised)} alerts (" + ", ".join(f"{n} {s}" for s, n in by_sev.items()) + ")")
    parts.append(f"final health {engine.health}")
    rec = engine.recommendation
    if rec is not None:
        parts.append(f"recommendation {_action_text(rec.to_dict())}")
    return "replay: " + "; ".join(parts)


def _action_text(action: dict[str, Any]) -> str:
    params = " ".join(f"{k}={_fmt(v)}" for k, v in action.items() if k not in ("type", "reason"))
    return f"{action.get('type', 'none')}{' ' + params if params else ''}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class _JsonlPrinter:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def emit(self, event: str, alert: dict[str, Any]) -> None:
        self.out.write(json.dumps({"event": event, **encode_floats(alert)}, allow_nan=False) + "\n")

    def close(self) -> None:
        self.out.flush()


class _TablePrinter:
    """Rows printed as they come (a long replay shows progress), columns of fixed width."""

    COLUMNS = (("step", 8), ("event", 9), ("severity", 8), ("kind", 14), ("action", 22), ("message", 0))

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.rows = 0

    def emit(self, event: str, alert: dict[str, Any]) -> None:
        if self.rows == 0:
            self._line([c for c, _ in self.COLUMNS])
        step = alert["resolved_step"] if event == "resolved" else alert["last_step"] if event != "raised" else alert["step"]
        self._line([str(step), event, alert["severity"], alert["kind"], _action_text(alert["action"]), alert["message"]])
        self.rows += 1

    def _line(self, cells: list[str]) -> None:
        parts = [c.ljust(w) if w else c for c, (_, w) in zip(cells, self.COLUMNS)]
        self.out.write("  ".join(parts).rstrip() + "\n")

    def close(self) -> None:
        if self.rows == 0:
            self.out.write("no alerts\n")
        self.out.flush()


def _default_run_id(path: Path) -> str:
    if path.is_dir():
        return path.resolve().name
    if path.name == "trainer_state.json":
        return path.resolve().parent.name  # output_dir/checkpoint-500/trainer_state.json
    return path.stem if "tfevents" not in path.name else path.resolve().parent.name


def _load_meta(spec: str | None) -> dict[str, Any] | None:
    if not spec:
        return None
    text = spec
    if spec.startswith("@"):
        try:
            text = Path(spec[1:]).read_text(encoding="utf-8")
        except OSError as e:
            raise ReadError(f"--meta {spec[1:]}: {e.strerror}") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReadError(f"--meta: invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(meta, dict):
        raise ReadError("--meta: expected a JSON object")
    try:
        objective_of(meta)
    except ValueError as e:
        raise ReadError(f"--meta: {e}") from None
    return meta


def _silence_broken_pipe() -> None:
    # `losswatch replay run.csv | head`: the reader went away; exit quietly, as Unix tools do
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
