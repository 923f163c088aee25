"""Parsing and validation of POST /v1/runs/{run_id}/steps bodies: the hot path.

The body is ``{"records": [record, ...], "project": "optional"}``, a record as in DESIGN.md
("The record"). It is parsed with orjson and validated in one tight loop straight into
:class:`~losswatch.service.stores.base.Columns` (no pydantic, no Record objects: at 1,000
records per request pydantic would cost more than everything else together). The request schema
is still documented in OpenAPI (:mod:`losswatch.service.api.models`).

Non-finite values: JSON has no NaN, so one arrives as the string "NaN", "Infinity" or "-Infinity"
(case-insensitive; "inf"/"-inf" too), or as the bare NaN/Infinity tokens Python's json writes:
orjson rejects those, so a body orjson refuses is parsed again by the standard library, which
accepts them. Either way a NaN stays a float NaN: never dropped, never None, never a 422.
"""

from __future__ import annotations

import json
import math
import re
from operator import itemgetter
from typing import Any

import orjson

from losswatch.detectors.wire import decode_float, encode_float

from .stores.base import VALUE_FIELDS, Columns
from .stores.series import BUCKET_KEYS

LABEL_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
LABEL_RULE = "1-128 characters of [A-Za-z0-9._:-]"  # LABEL_RE in words, for errors and docs
MAX_STEP = 2**63 - 1           # what a signed 64-bit store key / Prometheus sample can hold
MAX_ERRORS = 20                # a 422 lists at most this many problems
MAX_EXTRA_KEYS = 64
RECORD_KEYS = frozenset(("step", "loss", "grad_norm", "lr", "val_loss", "ts", "extra"))
BODY_KEYS = frozenset(("records", "project"))



def valid_label(s: Any) -> bool:
    """A run id, project or label value: 1-128 chars of [A-Za-z0-9._:-] (nothing that could
    break Prometheus' text format or a store key)."""
    return isinstance(s, str) and LABEL_RE.fullmatch(s) is not None


class IngestError(Exception):
    """A request the API refuses: ``status`` (413 or 422) and a JSON-safe ``detail``."""

    def __init__(self, status: int, detail: Any, rejected: int = 0) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.rejected = rejected   # records refused (for losswatch_ingest_records_total)


def _err(index: int | None, field: str | None, msg: str, kind: str) -> dict[str, Any]:
    loc: list[Any] = ["body"]
    if index is not None:
        loc += ["records", index]
    if field is not None:
        loc.append(field)
    return {"loc": loc, "index": index, "field": field, "msg": msg, "type": kind}


def loads(body: bytes) -> Any:
    """JSON text -> Python, orjson first, the standard library for bare NaN/Infinity tokens."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as first:
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as e:   # UnicodeDecodeError is a ValueError
            pos = getattr(e, "pos", None)
            msg = f"malformed JSON: {getattr(e, 'msg', None) or first}"
            if pos is not None:
                msg += f" at byte {pos}"
            raise IngestError(422, [_err(None, None, msg, "json_invalid")]) from None


#: one value field; raises ValueError with the reason (the wire codec, detectors/types.py)
_value = decode_float


def parse_steps(body: bytes, max_records: int) -> tuple[Columns, str | None]:
    """Validate a steps body; returns the columns and the body's ``project`` (or None).

    Raises :class:`IngestError` (413 for too many records, 422 for anything malformed: each
    problem with its field, record index and reason).
    """
    doc = loads(body)
    if type(doc) is not dict:
        raise IngestError(422, [_err(None, None, 'the body must be an object {"records": [...]}', "type_error")])
    unknown = doc.keys() - BODY_KEYS
    if unknown:
        raise IngestError(422, [_err(None, sorted(unknown)[0], f"unknown body field(s) {sorted(unknown)[:5]}",
                                     "extra_forbidden")])
    recs = doc.get("records")
    if type(recs) is not list:
        raise IngestError(422, [_err(None, "records", "'records' must be a list of records", "type_error")])
    n = len(recs)
    if n > max_records:
        raise IngestError(413, f"too many records in one batch: {n} > the limit of {max_records} "
                               f"(LOSSWATCH_MAX_BATCH_RECORDS)", rejected=n)
    project = doc.get("project")
    if project is not None and not valid_label(project):
        raise IngestError(422, [_err(None, "project", f"project must be {LABEL_RULE}", "value_error")], rejected=n)

    fast = _fast_columns(recs)
    if fast is not None:
        return fast, project
    # something is wrong (or unusual) in the batch: the record-by-record pass says what and where
    return _checked_columns(recs), project


def _step(v: Any) -> int | None:
    """A record's step as an int, or None when it is not one in [0, MAX_STEP]. An integral float
    (2957.0) is an integer, as JSON Schema's "integer" says; floats are exact integers, so int()
    loses nothing (2.0**63 is past the range and refused)."""
    if type(v) is float and v.is_integer():
        v = int(v)
    if type(v) is not int or v < 0 or v > MAX_STEP:
        return None
    return v


def _checked_columns(recs: list[Any]) -> Columns:
    """Record by record: the columns, or IngestError(422) naming each problem (index, field)."""
    n = len(recs)
    steps: list[int] = []
    values: list[list[float | None]] = [[] for _ in VALUE_FIELDS]
    ts: list[float | None] = []
    extra: list[dict[str, float] | None] = []
    errors: list[dict[str, Any]] = []
    keys = RECORD_KEYS
    for i, r in enumerate(recs):
        if type(r) is not dict:
            errors.append(_err(i, None, "a record must be an object", "type_error"))
            if len(errors) >= MAX_ERRORS:
                break
        else:
            nerr = len(errors)
            s = _step(r.get("step"))
            if s is None:
                errors.append(_err(i, "step", "step is required and must be an integer in [0, 2^63-1], "
                                           f"got {str(r.get('step'))[:40]}", "value_error"))
            if not keys.issuperset(r):
                errors.append(_err(i, sorted(set(r) - keys)[0], f"unknown field(s) {sorted(set(r) - keys)[:5]}",
                                   "extra_forbidden"))
            if len(errors) > nerr:
                if len(errors) >= MAX_ERRORS:
                    break
                continue
            try:
                row = []
                for f in VALUE_FIELDS:
                    v = r.get(f)
                    if type(v) is not float and v is not None:   # a float or absent needs no call
                        v = _value(v)
                    row.append(v)
                f = "ts"
                t = r.get("ts")
                if t is not None:
                    t = _value(t)
                    if not math.isfinite(t):
                        raise ValueError("ts must be a finite number (seconds since the epoch)")
                f = "extra"
                x = r.get("extra")
                if x is not None:
                    x = _extra(x)
            except (ValueError, OverflowError) as e:
                errors.append(_err(i, f, str(e), "value_error"))
                if len(errors) >= MAX_ERRORS:
                    break
                continue
            steps.append(s)
            for col, v in zip(values, row):
                col.append(v)
            ts.append(t)
            extra.append(x or None)
    if errors:
        raise IngestError(422, errors, rejected=n)
    return Columns(step=steps, **dict(zip(VALUE_FIELDS, values)), ts=ts, extra=extra)


_NONE = type(None)
_FLOAT_OR_NONE = frozenset((float, _NONE))
_NUMERIC = frozenset((float, _NONE, int, str))


def _fast_columns(recs: list[Any]) -> Columns | None:
    """The columns of a well-formed batch, checked column-wise at C speed (``set(map(type, ..))``
    instead of a Python loop per value); None as soon as anything needs a closer look, and the
    caller's record-by-record pass then accepts it or names the problem."""
    if not recs:
        return Columns()
    if set(map(type, recs)) != {dict}:
        return None
    keys = set().union(*recs)
    if not RECORD_KEYS.issuperset(keys):
        return None
    n = len(recs)

    def column(name: str) -> list[Any]:
        # a field no record has (val_loss, ts, extra on most lines) costs no pass at all, and one
        # that every record has is read by a C-level map; only a field some records lack is
        # read with .get record by record
        if name not in keys:
            return [None] * n
        try:
            return list(map(itemgetter(name), recs))
        except KeyError:
            return [r.get(name) for r in recs]

    steps = column("step")
    if set(map(type, steps)) != {int} or min(steps) < 0 or max(steps) > MAX_STEP:
        return None
    values = []
    try:
        for name in VALUE_FIELDS:
            col = column(name)
            types = set(map(type, col))
            if not types <= _FLOAT_OR_NONE:
                if not types <= _NUMERIC:
                    return None
                col = [_value(v) for v in col]
            values.append(col)
        ts = column("ts")
        types = set(map(type, ts))
        if types != {_NONE}:
            if not types <= {float, int, _NONE}:
                return None
            if int in types:  # the common case, all floats, needs no per-value pass here
                ts = [None if v is None else float(v) for v in ts]
            logged = ts if _NONE not in types else (v for v in ts if v is not None)
            if not all(map(math.isfinite, logged)):
                return None
        extra = column("extra")
        if set(map(type, extra)) != {_NONE}:
            extra = [None if x is None else (_extra(x) or None) for x in extra]
    except (ValueError, OverflowError):
        return None
    return Columns(step=steps, **dict(zip(VALUE_FIELDS, values)), ts=ts, extra=extra)


def _extra(x: Any) -> dict[str, float]:
    if type(x) is not dict:
        raise ValueError("extra must be an object of name -> number")
    if len(x) > MAX_EXTRA_KEYS:
        raise ValueError(f"extra has {len(x)} entries, more than {MAX_EXTRA_KEYS}")
    out = {}
    for k, v in x.items():
        if len(k) > 128:
            raise ValueError(f"extra key {k[:40]!r}... is longer than 128 characters")
        if k in BUCKET_KEYS:
            raise ValueError(f"extra key {k!r} is reserved: it marks a downsampled bucket when the series is read")
        f = _value(v)
        if f is None:
            continue
        out[k] = f
    return out


def safe_column(col: list[float | None]) -> list[float | str | None]:
    """A float column for JSON: non-finite values as strings."""
    if all(v is None or math.isfinite(v) for v in col):
        return col
    return [encode_float(v) for v in col]
