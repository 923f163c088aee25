"""``losswatch export RUN``: every stored step of a run, as CSV or JSON lines.

Both read back with ``losswatch replay`` (and the JSON lines post back to the API as they are):

* ``csv``: columns ``step, loss, grad_norm, lr, val_loss, ts`` and one ``extra.NAME`` column per
  extra value; an empty cell is a value that was not logged, a NaN is ``nan`` and infinities
  ``inf`` / ``-inf`` (what Python, pandas and the replay reader read as those values).
* ``jsonl``: one record a line, ``{"step": .., "loss": .., ..., "extra": {..}}``, values not
  logged left out, non-finite values as the API writes them: ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"`` (JSON has no NaN).

The steps come from ``GET /v1/runs/{id}/steps`` without downsampling (the endpoint answers the
whole run in one reply): the run's current timeline, or with ``--attempt N`` one attempt of a run
that was rolled back. To stdout, or ``-o FILE``, written only once every step arrived.
Exit status: 0; 1 for an unknown run or a refused token; 2 when no service answered or FILE
cannot be written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Any, Iterator

from losswatch.detectors.wire import VALUE_FIELDS, encode_float
from losswatch.service.remote import LookError, Service, add_run_arguments, add_service_arguments

FIELDS = VALUE_FIELDS
EXIT_CANNOT_WRITE = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="csv (default) or jsonl")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    p.add_argument("--attempt", type=int, metavar="N",
                   help="one attempt of the run (after a rollback; default: its current timeline)")
    add_service_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        service = Service.from_args(args)
        try:
            project = service.project_of(args.run_id, args.project)
            service.run(args.run_id, project)  # an unknown run is named as such
            series = service.series(args.run_id, project=project, attempt=args.attempt)["series"]
        finally:
            service.close()
    except LookError as e:
        print(f"losswatch export: {e}", file=sys.stderr)
        return e.exit_code
    text = "".join(csv_lines(series) if args.format == "csv" else jsonl_lines(series))
    n = len(series["step"])
    if not args.output:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    tmp = f"{args.output}.part"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, args.output)  # a failed write never leaves half a file under the name
    except OSError as e:
        print(f"losswatch export: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return EXIT_CANNOT_WRITE
    print(f"losswatch export: {n} steps of {args.run_id} written to {args.output} ({args.format})",
          file=sys.stderr)
    return 0


def _extra_names(series: dict[str, Any]) -> list[str]:
    return sorted({k for x in series["extra"] if x for k in x})


def _cell(v: float | None) -> str:
    return "" if v is None else repr(v)  # repr: the shortest text that reads back as the same float


def csv_lines(series: dict[str, Any]) -> Iterator[str]:
    extras = _extra_names(series)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", *FIELDS, "ts", *(f"extra.{k}" for k in extras)])
    for i, step in enumerate(series["step"]):
        extra = series["extra"][i] or {}
        w.writerow([step, *(_cell(series[f][i]) for f in FIELDS), _cell(series["ts"][i]),
                    *(_cell(extra.get(k)) for k in extras)])
        if buf.tell() > 1 << 16:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


_json_value = encode_float  # the wire's spelling of non-finite values


def jsonl_lines(series: dict[str, Any]) -> Iterator[str]:
    for i, step in enumerate(series["step"]):
        rec: dict[str, Any] = {"step": step}
        for f in FIELDS:
            if series[f][i] is not None:
                rec[f] = _json_value(series[f][i])
        if series["ts"][i] is not None:
            rec["ts"] = series["ts"][i]
        if series["extra"][i]:
            rec["extra"] = {k: _json_value(v) for k, v in series["extra"][i].items()}
        yield json.dumps(rec, allow_nan=False) + "\n"
