"""Readers for recorded training runs: CSV, JSON lines, Hugging Face ``trainer_state.json`` and
TensorBoard event files, each turned into a stream of :class:`~losswatch.detectors.types.Record`.

Every reader raises :class:`ReadError` with one line that says what is wrong and where
("bad.csv line 3: column loss: could not parse 'abc'"), never a bare ``ValueError`` or a
traceback-worthy exception, so ``losswatch replay`` can print it and exit 2.

CSV and JSON lines are streamed (a run of millions of steps is not held in memory); trainer_state
and TensorBoard logs key values by step across several entries or tags, so those two are merged by
step in memory and yielded in step order.

The TensorBoard reader parses the TFRecord framing and the few protobuf fields it needs itself, so
replaying event files needs neither ``tensorboard`` nor ``protobuf``. It checks the CRC of every
record's length (8 bytes: cheap, and it catches junk and truncation); it does not check the data
CRC, which would need a pure-Python CRC-32C over every byte of the file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from losswatch.detectors.types import Record
from losswatch.detectors.wire import VALUE_FIELDS

FORMATS = ("csv", "jsonl", "trainer_state", "tfevents")

# CSV header / JSON key aliases -> Record field. Lower-cased before lookup.
COLUMN_ALIASES: dict[str, str] = {
    "step": "step",
    "global_step": "step",
    "loss": "loss",
    "train_loss": "loss",
    "grad_norm": "grad_norm",
    "lr": "lr",
    "learning_rate": "lr",
    "val_loss": "val_loss",
    "eval_loss": "val_loss",
    "ts": "ts",
    "timestamp": "ts",
}

# TensorBoard scalar tags -> Record field (lower-cased). What PyTorch loops, Hugging Face's
# TensorBoardCallback ("train/loss", "eval/loss"), Lightning ("train_loss", "lr-Adam") and Keras
# ("epoch_loss" is per epoch, so not here) write by default.
DEFAULT_TAG_MAP: dict[str, str] = {
    "loss": "loss",
    "train_loss": "loss",
    "train/loss": "loss",
    "loss/train": "loss",
    "training/loss": "loss",
    "grad_norm": "grad_norm",
    "train/grad_norm": "grad_norm",
    "grad_norm/total": "grad_norm",
    "gradient_norm": "grad_norm",
    "lr": "lr",
    "learning_rate": "lr",
    "train/learning_rate": "lr",
    "train/lr": "lr",
    "lr/group0": "lr",
    "lr-adam": "lr",
    "lr-adamw": "lr",
    "lr-sgd": "lr",
    "val_loss": "val_loss",
    "eval_loss": "val_loss",
    "eval/loss": "val_loss",
    "val/loss": "val_loss",
    "loss/val": "val_loss",
    "validation/loss": "val_loss",
}


class ReadError(Exception):
    """A recorded run that cannot be read; ``str(e)`` is one line: what and where."""


# --------------------------------------------------------------------------- values


def parse_step(raw: Any, where: str) -> int:
    """A step from a CSV cell or a JSON value: a non-negative integer (``"12"`` and ``12.0`` too,
    since pandas writes integer columns with a missing cell as floats)."""
    if isinstance(raw, bool):
        raise ReadError(f"{where}: step must be a non-negative integer, got {json.dumps(raw)}")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float):
        if not raw.is_integer():
            raise ReadError(f"{where}: step must be a non-negative integer, got {raw!r}")
        value = int(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise ReadError(f"{where}: step is empty")
        try:
            value = int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                raise ReadError(f"{where}: could not parse {raw!r} as a step") from None
            if not math.isfinite(f) or not f.is_integer():
                raise ReadError(f"{where}: step must be a non-negative integer, got {raw!r}") from None
            value = int(f)
    elif raw is None:
        raise ReadError(f"{where}: step is missing")
    else:
        raise ReadError(f"{where}: step must be a non-negative integer, got {type(raw).__name__}")
    if value < 0:
        raise ReadError(f"{where}: step must be a non-negative integer, got {value}")
    return value


def parse_value(raw: Any, where: str) -> float | None:
    """A logged value. None and an empty cell are *missing*; "nan", "NaN", "inf", "Infinity",
    "-infinity" (any case) are the non-finite values they name: a NaN stays a NaN."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise ReadError(f"{where}: expected a number, got {json.dumps(raw)}")
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            return None
        try:
            return float(text)  # float() accepts nan/inf/infinity in any case
        except ValueError:
            raise ReadError(f"{where}: could not parse {raw!r}") from None
    raise ReadError(f"{where}: expected a number, got {type(raw).__name__}")


# --------------------------------------------------------------------------- CSV


def read_csv(path: Path) -> Iterator[Record]:
    """Records from a CSV (or tab-separated) file with a header naming ``step`` and any of
    ``loss, grad_norm, lr, val_loss`` (aliases: learning_rate, eval_loss, train_loss, global_step,
    ts/timestamp). Unknown columns are ignored. An empty cell is a value that was not logged."""
    name = path.name
    with _open_text(path) as fh:
        first = fh.readline()
        if not first.strip():
            raise ReadError(f"{name}: empty file" if not first else f"{name} line 1: empty header")
        delimiter = "\t" if first.count("\t") > first.count(",") else ","
        fh.seek(0)
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except csv.Error as e:
            raise ReadError(f"{name} line 1: {e}") from None
        columns: dict[int, str] = {}
        for i, col in enumerate(header):
            field = COLUMN_ALIASES.get(col.strip().lower())
            if field is not None and field not in columns.values():
                columns[i] = field
        if "step" not in columns.values():
            raise ReadError(f"{name} line 1: no 'step' column in the header ({', '.join(h.strip() for h in header)})")
        if not set(columns.values()) & set(VALUE_FIELDS):
            raise ReadError(f"{name} line 1: none of the columns {', '.join(VALUE_FIELDS)} in the header "
                            f"({', '.join(h.strip() for h in header)})")
        width = len(header)
        try:
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) > width:
                    raise ReadError(f"{name} line {line}: {len(row)} cells, the header has {width}")
                values: dict[str, Any] = {}
                for i, field in columns.items():
                    cell = row[i] if i < len(row) else ""
                    where = f"{name} line {line}: column {header[i].strip()}"
                    if field == "step":
                        values["step"] = parse_step(cell, where)
                    else:
                        values[field] = parse_value(cell, where)
                yield Record(**values)
        except csv.Error as e:
            raise ReadError(f"{name} line {reader.line_num}: {e}") from None


# --------------------------------------------------------------------------- JSON lines


def record_from_json(obj: Any, where: str) -> Record:
    """One DESIGN.md record (``{"step":..,"loss":..,...}``) checked field by field."""
    if not isinstance(obj, dict):
        raise ReadError(f"{where}: expected a JSON object (a record), got {_json_type(obj)}")
    values: dict[str, Any] = {}
    for key, raw in obj.items():
        field = COLUMN_ALIASES.get(key.lower()) if isinstance(key, str) else None
        if field is None or field in values:
            continue
        if field == "step":
            values["step"] = parse_step(raw, where)
        else:
            values[field] = parse_value(raw, f"{where}: field {key}")
    if "step" not in values:
        raise ReadError(f"{where}: the record has no 'step'")
    extra = obj.get("extra")
    if isinstance(extra, dict):
        parsed = {}
        for k, v in extra.items():
            num = parse_value(v, f"{where}: field extra.{k}") if not isinstance(v, (dict, list)) else None
            if num is not None:
                parsed[str(k)] = num
        values["extra"] = parsed
    return Record(**values)


def read_jsonl(path: Path) -> Iterator[Record]:
    """Records from JSON lines, one DESIGN.md record per line (blank lines skipped). A file that
    holds one JSON array of records is read too."""
    name = path.name
    with _open_text(path) as fh:
        head = fh.read(1)
        while head and head.isspace():
            head = fh.read(1)
        if not head:
            raise ReadError(f"{name}: empty file")
        fh.seek(0)
        if head == "[":
            data = _load_whole_json(fh, name)
            if not isinstance(data, list):
                raise ReadError(f"{name}: expected a JSON array of records")
            for i, obj in enumerate(data):
                yield record_from_json(obj, f"{name} record {i}")
            return
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReadError(f"{name} line {lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            yield record_from_json(obj, f"{name} line {lineno}")


# --------------------------------------------------------------------------- trainer_state.json


def read_trainer_state(path: Path) -> Iterator[Record]:
    """Records from a Hugging Face ``trainer_state.json``: its ``log_history`` entries (``step``,
    ``loss``, ``grad_norm``, ``learning_rate``, ``eval_loss``). Training and evaluation entries of
    the same step are merged; the final summary entry (``train_runtime``, ``train_loss``) is a
    run average, not a step value, and is skipped."""
    name = path.name
    with _open_text(path) as fh:
        state = _load_whole_json(fh, name)
    if not isinstance(state, dict) or "log_history" not in state:
        raise ReadError(f"{name}: not a trainer_state.json (no 'log_history')")
    history = state["log_history"]
    if not isinstance(history, list):
        raise ReadError(f"{name}: log_history must be a list, got {_json_type(history)}")
    keys = {"loss": "loss", "grad_norm": "grad_norm", "learning_rate": "lr", "eval_loss": "val_loss"}
    by_step: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(history):
        where = f"{name} log_history[{i}]"
        if not isinstance(entry, dict):
            raise ReadError(f"{where}: expected an object, got {_json_type(entry)}")
        if "train_runtime" in entry:
            continue
        if "step" not in entry:
            raise ReadError(f"{where}: no 'step'")
        step = parse_step(entry["step"], where)
        slot = by_step.setdefault(step, {"step": step})
        for key, field in keys.items():
            if key in entry:
                slot[field] = parse_value(entry[key], f"{where}: field {key}")
    for step in sorted(by_step):
        yield Record(**by_step[step])


# --------------------------------------------------------------------------- TensorBoard


def parse_tag_map(spec: str | None) -> dict[str, str]:
    """``"loss=my/loss,lr=opt/lr"`` -> the default tag map with those tags added (they win)."""
    tag_map = dict(DEFAULT_TAG_MAP)
    if not spec:
        return tag_map
    for part in spec.split(","):
        if not part.strip():
            continue
        field, sep, tag = part.partition("=")
        field, tag = field.strip(), tag.strip()
        if not sep or field not in VALUE_FIELDS or not tag:
            raise ReadError(f"--tag-map: expected FIELD=TAG with FIELD one of {', '.join(VALUE_FIELDS)}, got {part!r}")
        # an explicit tag replaces the defaults for that field, so two tags never fight
        for t in [t for t, f in tag_map.items() if f == field]:
            del tag_map[t]
        tag_map[tag.lower()] = field
    return tag_map


def tfevents_files(path: Path) -> list[Path]:
    """The event files of a TensorBoard log: the file itself, or every ``*tfevents*`` file under a
    directory (recursively), in name order (their names start with a timestamp)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*tfevents*") if p.is_file())
        if not files:
            raise ReadError(f"{path}: a directory with no TensorBoard event files (*tfevents*)")
        return files
    return [path]


def read_tfevents(path: Path, tag_map: dict[str, str] | None = None) -> Iterator[Record]:
    """Records from TensorBoard event files, scalars merged by step (tags mapped by ``tag_map``,
    default :data:`DEFAULT_TAG_MAP`, matched case-insensitively)."""
    tag_map = tag_map if tag_map is not None else DEFAULT_TAG_MAP
    by_step: dict[int, dict[str, Any]] = {}
    seen_tags: set[str] = set()
    for file in tfevents_files(path):
        for step, tag, value in iter_tfevents_scalars(file):
            seen_tags.add(tag)
            field = tag_map.get(tag.lower())
            if field is None:
                continue
            if step < 0:
                raise ReadError(f"{file.name}: tag {tag}: negative step {step}")
            by_step.setdefault(step, {"step": step})[field] = value
    if not by_step:
        found = ", ".join(sorted(seen_tags)[:20]) or "none"
        raise ReadError(f"{path.name}: no scalar tag maps to {', '.join(VALUE_FIELDS)} (scalar tags found: {found}); "
                        f"name them with --tag-map loss=TAG,lr=TAG")
    for step in sorted(by_step):
        yield Record(**by_step[step])


def iter_tfevents_scalars(path: Path) -> Iterator[tuple[int, str, float]]:
    """(step, tag, value) for every scalar summary in one event file."""
    name = path.name
    for offset, payload in _tfrecords(path):
        try:
            yield from _event_scalars(payload)
        except (IndexError, ValueError, struct.error, UnicodeDecodeError):
            raise ReadError(f"{name} byte {offset}: corrupt event record (not a TensorBoard Event)") from None


def _tfrecords(path: Path) -> Iterator[tuple[int, bytes]]:
    """TFRecord framing: uint64 length, uint32 masked CRC-32C of the length, data, uint32 CRC."""
    name = path.name
    with open(path, "rb") as fh:
        offset = 0
        while True:
            header = fh.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ReadError(f"{name} byte {offset}: truncated record header (file cut short?)")
            (length,) = struct.unpack("<Q", header[:8])
            (length_crc,) = struct.unpack("<I", header[8:])
            if _masked_crc32c(header[:8]) != length_crc:
                raise ReadError(f"{name} byte {offset}: not a TensorBoard event file (bad record header checksum)")
            data = fh.read(length)
            footer = fh.read(4)
            if len(data) < length or len(footer) < 4:
                raise ReadError(f"{name} byte {offset}: truncated record (file cut short?)")
            yield offset, data
            offset += 12 + length + 4


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message; length-delimited values as bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise ValueError("truncated")
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise ValueError("truncated")
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            if pos + 4 > end:
                raise ValueError("truncated")
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def _event_scalars(event: bytes) -> Iterator[tuple[int, str, float]]:
    # Event: 1 wall_time (double), 2 step (int64), 5 summary (Summary)
    step = 0
    summaries: list[bytes] = []
    for number, wire, value in _fields(event):
        if number == 2 and wire == 0:
            step = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 5 and wire == 2:
            summaries.append(value)
    for summary in summaries:
        # Summary: 1 repeated Value
        for number, wire, value in _fields(summary):
            if number == 1 and wire == 2:
                scalar = _summary_value(value)
                if scalar is not None:
                    yield step, scalar[0], scalar[1]


def _summary_value(buf: bytes) -> tuple[str, float] | None:
    # Summary.Value: 1 tag, 2 simple_value (float), 8 tensor (TensorProto) — the tensor form is
    # what add_scalar(new_style=True) and TF2's tf.summary.scalar write.
    tag: str | None = None
    scalar: float | None = None
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            tag = value.decode("utf-8")
        elif number == 2 and wire == 5:
            scalar = struct.unpack("<f", value)[0]
        elif number == 8 and wire == 2:
            scalar = _tensor_scalar(value)
    if tag is None or scalar is None:
        return None
    return tag, scalar


def _tensor_scalar(buf: bytes) -> float | None:
    # TensorProto: 1 dtype (1 float, 2 double), 4 tensor_content, 5 float_val, 6 double_val
    dtype = 0
    content = b""
    values: list[float] = []
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 0:
            dtype = value
        elif number == 4 and wire == 2:
            content = value
        elif number == 5:
            values.extend(struct.unpack(f"<{len(value) // 4}f", value) if wire == 2 else struct.unpack("<f", value))
        elif number == 6:
            values.extend(struct.unpack(f"<{len(value) // 8}d", value) if wire == 2 else struct.unpack("<d", value))
    if values:
        return float(values[0])
    if content and dtype == 1 and len(content) >= 4:
        return struct.unpack("<f", content[:4])[0]
    if content and dtype == 2 and len(content) >= 8:
        return struct.unpack("<d", content[:8])[0]
    return None


# --------------------------------------------------------------------------- detection


def detect_format(path: Path) -> str:
    """The format of a recorded run, from its name and its first bytes.

    A directory or a name containing ``tfevents`` is TensorBoard; ``.csv``/``.tsv`` is CSV;
    ``.jsonl``/``.ndjson`` is JSON lines; otherwise the content decides: a JSON object with
    ``log_history`` is a trainer_state, other JSON is records, binary data that frames as a
    TFRecord is TensorBoard, text with a comma or tab on its first line is CSV.
    """
    if path.is_dir():
        return "tfevents"
    name = path.name.lower()
    if "tfevents" in name:
        return "tfevents"
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as e:
        raise ReadError(f"{path}: {e.strerror or e}") from None
    if not head.strip():
        raise ReadError(f"{path.name}: empty file")
    if len(head) >= 12 and _masked_crc32c(head[:8]) == struct.unpack("<I", head[8:12])[0]:
        return "tfevents"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a multi-byte character cut at the 4096 boundary
            raise ReadError(f"{path.name}: not a recognised run file (binary data, not CSV, JSON or TensorBoard)") from None
        text = head[:e.start].decode("utf-8")
    if "\x00" in text:
        raise ReadError(f"{path.name}: not a recognised run file (binary data, not CSV, JSON or TensorBoard)")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return "jsonl"
    if stripped.startswith("{"):
        if suffix == ".json" or name == "trainer_state.json" or '"log_history"' in text:
            # a pretty-printed whole-file JSON object; trainer_state has log_history
            if '"log_history"' in text or name == "trainer_state.json" or not _first_line_is_object(stripped):
                return "trainer_state"
        return "jsonl"
    first_line = stripped.splitlines()[0] if stripped else ""
    if "," in first_line or "\t" in first_line:
        return "csv"
    raise ReadError(f"{path.name}: not a recognised run file (expected CSV with a header, JSON lines, "
                    f"trainer_state.json or TensorBoard events); use --input-format")


def read_run(path: str | os.PathLike[str], fmt: str | None = None, tag_map: dict[str, str] | None = None) -> Iterator[Record]:
    """Records of a recorded run in file order (trainer_state and TensorBoard: step order).

    Parameters
    ----------
    path : file (or, for TensorBoard, a log directory)
    fmt : one of :data:`FORMATS`, or None to detect it
    tag_map : TensorBoard tag -> field (see :func:`parse_tag_map`)

    Raises
    ------
    ReadError
        One line saying what is wrong and where; raised while iterating for streamed formats.
    """
    p = Path(path)
    if not p.exists():
        raise ReadError(f"{path}: no such file or directory")
    if fmt is None:
        fmt = detect_format(p)
    elif p.is_dir() and fmt != "tfevents":
        raise ReadError(f"{path}: is a directory (only TensorBoard logs can be directories)")
    readers = {"csv": read_csv, "jsonl": read_jsonl, "trainer_state": read_trainer_state}
    if fmt == "tfevents":
        return _guard(read_tfevents(p, tag_map), p.name)
    if fmt not in readers:
        raise ReadError(f"unknown input format {fmt!r} (one of {', '.join(FORMATS)})")
    return _guard(readers[fmt](p), p.name)


def _guard(records: Iterator[Record], name: str) -> Iterator[Record]:
    """Turn the OS's and the decoder's exceptions into one-line ReadErrors."""
    try:
        yield from records
    except UnicodeDecodeError as e:
        raise ReadError(f"{name}: not text (a byte near offset {e.start} of a read chunk is not UTF-8); "
                        f"binary file?") from None
    except OSError as e:
        raise ReadError(f"{name}: {e.strerror or e}") from None


# --------------------------------------------------------------------------- helpers


def _open_text(path: Path) -> io.TextIOWrapper:
    try:
        return open(path, encoding="utf-8", newline="")
    except IsADirectoryError:
        raise ReadError(f"{path}: is a directory") from None
    except OSError as e:
        raise ReadError(f"{path}: {e.strerror}") from None


def _load_whole_json(fh: io.TextIOBase, name: str) -> Any:
    text = fh.read()
    if not text.strip():
        raise ReadError(f"{name}: empty file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ReadError(f"{name} line {e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise ReadError(f"{name}: JSON nested too deeply") from None


def _first_line_is_object(text: str) -> bool:
    line = text.splitlines()[0]
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def chunked(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """Consecutive lists of at most ``size`` records, in order."""
    chunk: list[Record] = []
    for r in records:
        chunk.append(r)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
