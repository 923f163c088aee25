"""Packed step storage for the Redis store: fixed-size raw chunks and downsampled buckets.

Why packed: one Redis entry per step costs ~53 bytes plus a command each (pipelined XADD tops out
near 47,000 entries/s here), which cannot keep up with the service. So steps live in chunks of
``CHUNK`` consecutive steps, one Redis string per chunk: a leading bitmap says which slots are
stored (Redis SETBIT bit order: bit 0 = most significant bit of byte 0), then slot ``step % CHUNK``
holds the five float64 values (loss, grad_norm, lr, val_loss, ts; 40 bytes). A batch becomes a few
SETRANGE/SETBIT calls inside one Lua script: one round trip, ~40 bytes a step. The string grows
with the run in blocks of 64 slots, each growth an exact-size SET (strings grown by SETRANGE keep
up to 2x their length allocated), so a short run does not pay for a whole chunk.

"Not logged" (None) is stored as one reserved NaN bit pattern (:data:`NONE_BITS`, a signalling
NaN that JSON parsing never produces), so a real NaN stays a NaN and a missing value stays None.

Old steps are downsampled so that memory per run stays bounded (a fixed raw window and levels 1 and
2 of fixed size; only level 3 grows, by one point per 131,072 steps): a raw chunk that falls behind
the most recent ``raw_chunks`` chunks becomes ``CHUNK // 64`` level-1 buckets of 64 steps; past
``keep`` buckets, a level's oldest buckets merge into the next, coarser level (see :data:`LEVELS`).
A bucket keeps, per value field, min and max (over non-NaN values, so an Infinity shows), the sum
and count of finite values (mean), the NaN count (a NaN stays visible at every resolution) and how
many values were logged, plus how many steps it holds, its first/last timestamp and which of its
steps are stored (so a late duplicate is still recognised).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .base import VALUE_FIELDS

# Steps per raw chunk. 960 = 15 level-1 buckets; 120 + 960 * 40 bytes fits jemalloc's 40 KiB size
# class with 6% slack (1024 steps would spill into the 48 KiB class: 17% waste).
CHUNK = 960
FIELDS = (*VALUE_FIELDS, "ts")
NF = len(FIELDS)
SLOT_BYTES = 8 * NF
PRESENCE_BYTES = CHUNK // 8           # the bitmap comes first: bit k = slot k is stored
DATA_OFFSET = PRESENCE_BYTES          # slot k's values start at DATA_OFFSET + k * SLOT_BYTES
CHUNK_BYTES = PRESENCE_BYTES + CHUNK * SLOT_BYTES
GROW_BYTES = 64 * SLOT_BYTES          # a chunk string grows in blocks of 64 slots (see redis_scripts)

NONE_BITS = np.uint64(0x7FF00000DEADBEEF)   # signalling NaN payload = "not logged"


#: the ``extra`` names that make a series row a downsampled bucket: (steps it spans, steps stored in
#: it). A record's own extra may not use them (ingest refuses it), so a row is a bucket exactly
#: when its extra has the first.
BUCKET_KEYS = ("ds_width", "ds_steps")


@dataclass(frozen=True, slots=True)
class Level:
    """A downsampled level: buckets of ``width`` steps; at most ``keep`` buckets stay at this
    level (the newest); older ones merge into the next level's wider buckets."""

    width: int
    keep: int | None


# level 1: 64 steps per point, the newest 512 points (32,768 steps);
# level 2: 2,048 steps per point, the newest 1,024 points (2.1M steps);
# level 3: 131,072 steps per point, unbounded (8 points per 1M steps).
LEVELS = (Level(64, 512), Level(2048, 1024), Level(131072, None))


def check_levels(levels: Sequence[Level]) -> None:
    """Three levels; level-1 buckets tile a chunk, each level's width divides the next one's."""
    if len(levels) != 3 or CHUNK % levels[0].width or levels[0].width % 8:
        raise ValueError(f"need 3 levels, the first one's width dividing {CHUNK} (and by 8)")
    for a, b in zip(levels, levels[1:]):
        if b.width % a.width or a.keep is None:
            raise ValueError("each level's width must divide the next one's; only the last is unbounded")


def chunk_member(ci: int) -> str:
    """A chunk number as the Redis store indexes it: fixed width, so that the index's lexical
    order is the numeric order (chunk numbers stay exact strings; Lua's numbers are doubles)."""
    return f"{ci:020d}"


# --- aggregate record -------------------------------------------------------------------------
# n_steps:u4, ts_min:f8, ts_max:f8, then per value field: min f8, max f8, sum f8, n_fin u4,
# n_nan u4, n_val u4, then the presence bitmap of the bucket's steps (width / 8 bytes; zlib-
# compressed above 64 steps: a complete or regularly strided bucket compresses to a few bytes),
# which keeps duplicate detection exact for late steps of downsampled ranges.
_AGG_HEAD = struct.Struct("<Idd")
_AGG_FIELD = struct.Struct("<dddIII")
_RAW_MASK_MAX = 8     # bytes: up to 64 steps the bitmap is stored as is
# the same head and per-field records as a numpy structured type (packed, no padding): the
# vectorised aggregation writes every bucket of a chunk at once
_AGG_DTYPE = np.dtype([("n_steps", "<u4"), ("ts_min", "<f8"), ("ts_max", "<f8"),
                       ("fields", [("vmin", "<f8"), ("vmax", "<f8"), ("vsum", "<f8"), ("n_fin", "<u4"),
                                   ("n_nan", "<u4"), ("n_val", "<u4")], (len(VALUE_FIELDS),))])
assert _AGG_DTYPE.itemsize == _AGG_HEAD.size + len(VALUE_FIELDS) * _AGG_FIELD.size


def pack_rows(cols, idx: Sequence[int]) -> bytes:
    """The rows ``idx`` of a :class:`~.base.Columns` as packed float64 slots (n * 40 bytes).

    With ``struct``, not numpy: a batch of 10 rows is packed in a few microseconds, where building
    arrays per field costs tens. Floats are packed as their 8 bytes (a NaN keeps its payload)."""
    columns = [getattr(cols, name) for name in FIELDS]
    flat = [col[i] for i in idx for col in columns]       # row by row: slot i's NF values together
    if None not in flat:
        return struct.pack(f"<{len(flat)}d", *flat)
    # not logged: NONE_BITS as an unsigned 64-bit integer in that value's place
    fmt = "<" + "".join(["Q" if v is None else "d" for v in flat])
    return struct.pack(fmt, *[_NONE_INT if v is None else v for v in flat])


_NONE_INT = int(NONE_BITS)


def decode_slots(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A raw chunk string as (present slot indices, values[n_present, 5]).

    The string may be shorter than CHUNK_BYTES (never written to its end): missing bytes are zero.
    """
    bits, data = _chunk_arrays(blob)
    slots = np.flatnonzero(bits)
    return slots, data[slots]


def _chunk_arrays(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A raw chunk as (presence bit per slot, the (CHUNK, NF) float64 slots), zero-padded."""
    if len(blob) < CHUNK_BYTES:
        blob = blob + bytes(CHUNK_BYTES - len(blob))
    bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8, count=PRESENCE_BYTES), bitorder="big")
    data = np.frombuffer(blob, dtype="<f8", count=CHUNK * NF, offset=DATA_OFFSET).reshape(CHUNK, NF)
    return bits, data


def values_to_lists(data: np.ndarray) -> list[list[float | None]]:
    """Columns of a values array as Python lists, NONE_BITS back to None."""
    out = []
    none = data.view("<u8") == NONE_BITS
    for j in range(NF):
        col = data[:, j].tolist()
        if none[:, j].any():
            for i in np.flatnonzero(none[:, j]).tolist():
                col[i] = None
        out.append(col)
    return out


# --- aggregates -------------------------------------------------------------------------------

@dataclass(slots=True)
class Agg:
    """Statistics of one bucket (see the module docstring)."""

    width: int = 64
    n_steps: int = 0
    ts_min: float = math.inf
    ts_max: float = -math.inf
    vmin: list[float] = None      # type: ignore[assignment]
    vmax: list[float] = None      # type: ignore[assignment]
    vsum: list[float] = None      # type: ignore[assignment]
    n_fin: list[int] = None       # type: ignore[assignment]
    n_nan: list[int] = None       # type: ignore[assignment]
    n_val: list[int] = None       # type: ignore[assignment]
    mask: bytearray = None        # type: ignore[assignment]

    def __post_init__(self) -> None:
        k = len(VALUE_FIELDS)
        if self.mask is None:
            self.mask = bytearray(self.width // 8)
        self.vmin = self.vmin or [math.inf] * k
        self.vmax = self.vmax or [-math.inf] * k
        self.vsum = self.vsum or [0.0] * k
        self.n_fin = self.n_fin or [0] * k
        self.n_nan = self.n_nan or [0] * k
        self.n_val = self.n_val or [0] * k

    def has(self, offset: int) -> bool:
        """Whether the step at ``offset`` from the bucket's first step is in it."""
        return bool(self.mask[offset >> 3] & (0x80 >> (offset & 7)))

    def add(self, offset: int, values: Sequence[float | None], ts: float | None) -> None:
        """Fold in the step at ``offset`` from the bucket start (values in VALUE_FIELDS order);
        the caller checks :meth:`has` first (a step is folded in once)."""
        self.mask[offset >> 3] |= 0x80 >> (offset & 7)
        self.n_steps += 1
        if ts is not None and not math.isnan(ts):
            self.ts_min = min(self.ts_min, ts)
            self.ts_max = max(self.ts_max, ts)
        for j, v in enumerate(values):
            if v is None:
                continue
            self.n_val[j] += 1
            if math.isnan(v):
                self.n_nan[j] += 1
                continue
            self.vmin[j] = min(self.vmin[j], v)
            self.vmax[j] = max(self.vmax[j], v)
            if math.isfinite(v):
                self.vsum[j] += v
                self.n_fin[j] += 1

    def merge(self, o: "Agg", offset: int) -> None:
        """Fold in the bucket ``o`` whose first step is ``offset`` steps after ours (one at a time:
        the reference that :func:`merge_buckets`, which folds them all at once, is tested against)."""
        lo = offset // 8
        for k, byte in enumerate(o.mask):
            self.mask[lo + k] |= byte
        self.n_steps += o.n_steps
        self.ts_min = min(self.ts_min, o.ts_min)
        self.ts_max = max(self.ts_max, o.ts_max)
        for j in range(len(VALUE_FIELDS)):
            self.vmin[j] = min(self.vmin[j], o.vmin[j])
            self.vmax[j] = max(self.vmax[j], o.vmax[j])
            self.vsum[j] += o.vsum[j]
            self.n_fin[j] += o.n_fin[j]
            self.n_nan[j] += o.n_nan[j]
            self.n_val[j] += o.n_val[j]

    def pack(self) -> bytes:
        parts = [_AGG_HEAD.pack(self.n_steps, self.ts_min, self.ts_max)]
        for j in range(len(VALUE_FIELDS)):
            parts.append(_AGG_FIELD.pack(self.vmin[j], self.vmax[j], self.vsum[j], self.n_fin[j],
                                         self.n_nan[j], self.n_val[j]))
        parts.append(bytes(self.mask) if len(self.mask) <= _RAW_MASK_MAX else zlib.compress(self.mask, 1))
        return b"".join(parts)

    @classmethod
    def unpack(cls, b: bytes, width: int) -> "Agg":
        n, t0, t1 = _AGG_HEAD.unpack_from(b, 0)
        a = cls(width=width, n_steps=n, ts_min=t0, ts_max=t1)
        off = _AGG_HEAD.size
        for j in range(len(VALUE_FIELDS)):
            (a.vmin[j], a.vmax[j], a.vsum[j], a.n_fin[j], a.n_nan[j],
             a.n_val[j]) = _AGG_FIELD.unpack_from(b, off)
            off += _AGG_FIELD.size
        m = b[off:]
        a.mask = bytearray(m if width // 8 <= _RAW_MASK_MAX else zlib.decompress(m))
        return a

    def representative(self, j: int) -> float | None:
        """The value a chart shows for field j: NaN if any value was NaN (kept visible), else the
        mean of the finite values, else the infinite extreme, else None (never logged)."""
        if self.n_val[j] == 0:
            return None
        if self.n_nan[j]:
            return math.nan
        if self.n_fin[j]:
            return self.vsum[j] / self.n_fin[j]
        return self.vmax[j] if self.vmax[j] != -math.inf else self.vmin[j]

    def row(self, first_step: int, width: int) -> dict[str, Any]:
        """The bucket as a series row: ``step`` = first step of the bucket, the value fields
        hold :meth:`representative`, ``ts`` the last timestamp, and ``extra`` says it is a
        bucket: ``ds_width`` (steps it spans), ``ds_steps`` (steps stored in it) and per field
        ``<f>_min``, ``<f>_max``, ``<f>_mean``, ``<f>_nan``."""
        extra: dict[str, float] = dict(zip(BUCKET_KEYS, (float(width), float(self.n_steps))))
        out: dict[str, Any] = {"step": first_step}
        for j, f in enumerate(VALUE_FIELDS):
            out[f] = self.representative(j)
            if self.n_val[j]:
                if self.vmin[j] != math.inf:
                    extra[f"{f}_min"] = self.vmin[j]
                    extra[f"{f}_max"] = self.vmax[j]
                if self.n_fin[j]:
                    extra[f"{f}_mean"] = self.vsum[j] / self.n_fin[j]
                extra[f"{f}_nan"] = float(self.n_nan[j])
        out["ts"] = self.ts_max if self.ts_max != -math.inf else None
        out["extra"] = extra
        return out


def aggregate_chunk(chunk_idx: int, blob: bytes | None, width: int) -> dict[int, bytes]:
    """A raw chunk's stored steps as level-1 buckets {bucket index: packed Agg} (vectorised:
    the same statistics as folding each step in with :meth:`Agg.add`)."""
    if not blob:
        return {}
    bits, data = _chunk_arrays(blob)
    return _aggregate(chunk_idx, bits.astype(bool), data, width)


def aggregate_rows(cols, idx: Sequence[int], width: int) -> dict[int, bytes]:
    """Rows ``idx`` of a :class:`~.base.Columns` (sorted by step) as level-1 buckets, exactly as
    :func:`aggregate_chunk` makes them from the chunks holding the same steps (the memory store
    folds its raw window with this, the Redis store its chunk strings)."""
    if not len(idx):
        return {}
    steps = np.array(_take(cols.step, idx), dtype=np.int64)
    values = rows_array(cols, idx)
    chunks = steps // CHUNK
    bounds = [0, *(np.flatnonzero(chunks[1:] != chunks[:-1]) + 1).tolist(), len(steps)]
    out: dict[int, bytes] = {}
    for lo, hi in zip(bounds, bounds[1:]):
        ci = int(chunks[lo])
        slots = steps[lo:hi] - ci * CHUNK
        present = np.zeros(CHUNK, dtype=bool)
        data = np.zeros((CHUNK, NF), dtype="<f8")
        present[slots] = True
        data[slots] = values[lo:hi]
        out.update(_aggregate(ci, present, data, width))
    return out


def _take(col: list, idx: Sequence[int]) -> list:
    """``col[i] for i in idx``; a slice when ``idx`` is a range (the memory store's prefix)."""
    if isinstance(idx, range):
        return col[idx.start:idx.stop:idx.step]
    return [col[i] for i in idx]


def rows_array(cols, idx: Sequence[int]) -> np.ndarray:
    """The rows ``idx`` of a :class:`~.base.Columns` as a (len(idx), NF) float64 array, "not
    logged" as :data:`NONE_BITS`: the values :func:`pack_rows` packs, built a column at a time
    (numpy converts a list of floats in C; a column without None, the usual one, needs no mask)."""
    out = np.empty((len(idx), NF), dtype="<f8")
    bits = out.view("<u8")
    for j, name in enumerate(FIELDS):
        col = _take(getattr(cols, name), idx)
        n_none = col.count(None)
        if n_none == len(col):               # a column this stretch never logged (often val_loss)
            bits[:, j] = NONE_BITS
            continue
        out[:, j] = col                      # numpy reads None as NaN: the mask puts NONE_BITS back
        if n_none:
            bits[[v is None for v in col], j] = NONE_BITS
    return out


# Up to this many steps in a chunk, folding them one by one costs less than numpy's fixed cost
# per reduction over the whole chunk (a run logged every 256 steps has 4 steps a chunk).
_SPARSE_STEPS = 48


def _aggregate(chunk_idx: int, present: np.ndarray, data: np.ndarray, width: int) -> dict[int, bytes]:
    n_present = int(np.count_nonzero(present))
    if n_present == 0:
        return {}
    if n_present <= _SPARSE_STEPS:
        slots = np.flatnonzero(present)
        return _fold_slots(chunk_idx, slots, data[slots], width)
    nb = CHUNK // width
    # field-major, so that each bucket's values of a field are contiguous: numpy reduces a
    # contiguous last axis several times faster than a strided middle one
    values = np.ascontiguousarray(data.T)
    logged = present & (values.view("<u8") != NONE_BITS)
    with np.errstate(invalid="ignore"):
        isnan = np.isnan(values)
    notnan = logged & ~isnan
    finite = notnan & np.isfinite(values)

    def per_bucket(a: np.ndarray, fn) -> np.ndarray:
        return fn(a.reshape(*a.shape[:-1], nb, width), axis=-1)

    vmin = per_bucket(np.where(notnan, values, np.inf), np.min)       # (field, bucket)
    vmax = per_bucket(np.where(notnan, values, -np.inf), np.max)
    # summed in step order (a cumulative sum's last value), as Agg.add folds them: the same
    # float sum to the bit, where np.sum's pairwise order would differ in the last digits
    # (+ 0.0: a fold starts from +0.0, so a bucket of -0.0 values sums to +0.0 there too)
    vsum = per_bucket(np.where(finite, values, 0.0), np.cumsum)[..., -1] + 0.0
    n_fin = per_bucket(finite, np.sum)
    n_nan = per_bucket(logged & isnan, np.sum)
    n_val = per_bucket(logged, np.sum)
    n_steps = per_bucket(present, np.sum)
    masks = np.packbits(present.reshape(nb, width), axis=1, bitorder="big")
    # the buckets' packed heads in one structured array (the layout Agg.pack writes), not an Agg
    # object each: a chunk's 15 buckets cost a few numpy assignments instead of 15 constructions
    ts, nv = NF - 1, len(VALUE_FIELDS)
    heads = np.zeros(nb, dtype=_AGG_DTYPE)
    heads["n_steps"] = n_steps
    heads["ts_min"] = vmin[ts]
    heads["ts_max"] = vmax[ts]
    per_field = heads["fields"]
    for name, stat in (("vmin", vmin), ("vmax", vmax), ("vsum", vsum), ("n_fin", n_fin),
                       ("n_nan", n_nan), ("n_val", n_val)):
        per_field[name] = stat[:nv].T
    raw_mask = width // 8 <= _RAW_MASK_MAX
    base = chunk_idx * nb
    return {base + k: heads[k].tobytes() + (masks[k].tobytes() if raw_mask else zlib.compress(masks[k].tobytes(), 1))
            for k in np.flatnonzero(n_steps).tolist()}


def aggregate_chunk_slow(chunk_idx: int, blob: bytes | None, width: int) -> dict[int, bytes]:
    """Reference for :func:`aggregate_chunk`: every step folded in with :meth:`Agg.add`."""
    if not blob:
        return {}
    slots, data = decode_slots(blob)
    return _fold_slots(chunk_idx, slots, data, width)


def _fold_slots(chunk_idx: int, slots: np.ndarray, data: np.ndarray, width: int) -> dict[int, bytes]:
    cols = values_to_lists(data)
    out: dict[int, Agg] = {}
    for i, slot in enumerate(slots.tolist()):
        b, off = divmod(chunk_idx * CHUNK + slot, width)
        agg = out.get(b)
        if agg is None:
            agg = out[b] = Agg(width=width)
        agg.add(off, [cols[j][i] for j in range(len(VALUE_FIELDS))], cols[NF - 1][i])
    return {b: a.pack() for b, a in out.items()}


def merge_buckets(base: bytes | None, width: int, first_step: int, parts: dict[int, bytes],
                  sub_width: int) -> bytes:
    """The bucket of ``width`` steps starting at ``first_step`` (``base``: its stored form, or
    None) with the narrower buckets ``parts`` {sub-bucket index: packed} folded in: the
    statistics :meth:`Agg.merge` folds one by one, over all the heads at once."""
    order = sorted(parts)
    blobs = [parts[sb] for sb in order]
    offsets = [sb * sub_width - first_step for sb in order]
    widths = [sub_width] * len(blobs)
    if base:
        blobs, offsets, widths = [base, *blobs], [0, *offsets], [width, *widths]
    if not blobs:
        return Agg(width=width).pack()
    size = _AGG_DTYPE.itemsize
    heads = np.frombuffer(b"".join([b[:size] for b in blobs]), dtype=_AGG_DTYPE)
    acc = np.zeros(1, dtype=_AGG_DTYPE)
    acc["n_steps"] = heads["n_steps"].sum()
    acc["ts_min"] = heads["ts_min"].min()
    acc["ts_max"] = heads["ts_max"].max()
    into, f = acc["fields"], heads["fields"]
    into["vmin"] = f["vmin"].min(axis=0)
    into["vmax"] = f["vmax"].max(axis=0)
    into["vsum"] = np.cumsum(f["vsum"], axis=0)[-1] + 0.0  # in Agg.merge's order, from +0.0: to the bit
    for name in ("n_fin", "n_nan", "n_val"):
        into[name] = f[name].sum(axis=0)
    mask = np.zeros(width // 8, dtype=np.uint8)
    for blob, off, w in zip(blobs, offsets, widths):
        m = blob[size:] if w // 8 <= _RAW_MASK_MAX else zlib.decompress(blob[size:])
        mask[off // 8:off // 8 + len(m)] |= np.frombuffer(m, dtype=np.uint8)
    raw = mask.tobytes()
    return acc.tobytes() + (raw if len(raw) <= _RAW_MASK_MAX else zlib.compress(raw, 1))


# --- the tiers: which steps stay raw, which buckets move to a coarser level -------------------
#
# Watermarks (per run): c0 = first raw chunk (steps below c0 * CHUNK are downsampled); w1 = first
# level-1 bucket kept at level 1 (older level-1 buckets were merged into level 2); w2 = first
# level-2 bucket kept at level 2. Every computation here is on the stored buckets only, never on
# the range between them, so a gap of 10^15 steps costs what a gap of one step costs.

def raw_start(last_step: int, raw_chunks: int) -> int:
    """The first chunk that stays raw when the highest step is ``last_step``."""
    return max(0, last_step // CHUNK - raw_chunks + 1)


def late_level(levels: Sequence[Level], w1: int, w2: int, step: int) -> int:
    """Which level (0, 1, 2) holds a step below the raw window."""
    if step // levels[0].width >= w1:
        return 0
    return 1 if step // levels[1].width >= w2 else 2


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


@dataclass(slots=True)
class Cascade:
    """What moves down a level once the raw window starts at chunk ``c0``."""

    w1: int
    w2: int
    into_d2: dict[int, list[int]]       # level-2 bucket -> the level-1 buckets merged into it
    into_d3: dict[int, list[int]]       # level-3 bucket -> the level-2 buckets merged into it


def plan_cascade(levels: Sequence[Level], c0: int, w1: int, w2: int, d1_keys: Iterable[int],
                 d2_keys: Iterable[int]) -> Cascade:
    """Level 1 keeps its newest ``keep`` buckets below chunk ``c0``, level 2 its newest ``keep``;
    the watermarks move by whole buckets of the next level, and only stored buckets move
    (``d1_keys``/``d2_keys``: the level-1/2 bucket indices stored, including new ones)."""
    L1, L2, L3 = levels
    g1, g2 = L2.width // L1.width, L3.width // L2.width
    assert L1.keep is not None and L2.keep is not None
    nw1 = max(w1, _round_up(c0 * (CHUNK // L1.width) - L1.keep, g1))
    nw2 = max(w2, _round_up(nw1 // g1 - L2.keep, g2))
    into_d2: dict[int, list[int]] = {}
    if nw1 > w1:
        for b in d1_keys:
            if b < nw1:
                into_d2.setdefault(b // g1, []).append(b)
    into_d3: dict[int, list[int]] = {}
    if nw2 > w2:
        for b in set(d2_keys) | set(into_d2):
            if b < nw2:
                into_d3.setdefault(b // g2, []).append(b)
    return Cascade(nw1, nw2, into_d2, into_d3)


def apply_cascade(levels: Sequence[Level], plan: Cascade, d1: Mapping[int, bytes],
                  d2: Mapping[int, bytes | None], d3: Mapping[int, bytes | None]) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """The level-2 and level-3 buckets to write for ``plan``: ``d1`` holds every level-1 bucket
    it moves, ``d2``/``d3`` the stored buckets it merges into or moves on (missing: none). The
    caller deletes the moved level-1 buckets (``into_d2``'s) and level-2 buckets (``into_d3``'s)."""
    L1, L2, L3 = levels
    new2 = {b: merge_buckets(d2.get(b), L2.width, b * L2.width, {s: d1[s] for s in subs if d1.get(s)}, L1.width)
            for b, subs in plan.into_d2.items()}
    new3: dict[int, bytes] = {}
    for b, subs in plan.into_d3.items():
        parts = {}
        for s in subs:
            blob = new2.pop(s, None) or d2.get(s)
            if blob:
                parts[s] = blob
        new3[b] = merge_buckets(d3.get(b), L3.width, b * L3.width, parts, L2.width)
    return new2, new3


def level_spans(levels: Sequence[Level], c0: int, w1: int, w2: int) -> list[tuple[int, int, int]]:
    """(level, first step, end step) of the steps each level holds (level 3 first, then 2, 1)."""
    L1, L2, _ = levels
    return [(2, 0, w2 * L2.width), (1, w2 * L2.width, w1 * L1.width), (0, w1 * L1.width, c0 * CHUNK)]


def bucket_rows(buckets: Mapping[int, bytes], width: int, lo: int, hi: int) -> list[dict[str, Any]]:
    """Series rows of the buckets whose first step is in [lo, hi], in step order."""
    rows = []
    for b in sorted(buckets):
        s = b * width
        if lo <= s <= hi:
            rows.append(Agg.unpack(buckets[b], width).row(s, width))
    return rows
