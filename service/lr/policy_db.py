"""The LR policy database: which LR policy worked for which task, and how well.

A *task* is keyed by (model_family, dataset, optimizer, batch_size); a *policy* is an LR
schedule declaration (``losswatch.detectors.schedules``: ``{"name": "warmup_cosine", "lr":
6e-4, ...}``). Each entry records the outcome of one training run (or a published recipe):
final and best metric, steps, wall time, diverged or not, where it came from.

Storage: this SQLite file is the offline CLI's (``losswatch policies``, ``tune --record``,
``evaluate --record``): path ``$LOSSWATCH_POLICY_DB``, default ``~/.losswatch/policies.sqlite``;
it is in the standard library, survives restarts, and WAL mode lets several processes of one
host share it. The service keeps its entries in its own store instead (:mod:`.policy_store`), so
every replica serves the same. The rules of a query (:func:`entry_matches`, :func:`rank_best`)
are written once here, over :class:`PolicyEntry` objects, and shared by both.

An empty database is seeded once with well-known recipes (``SEED_RECIPES``, source "seed"); a
metadata flag remembers it, so deleting seeds does not bring them back.

Ownership: an entry has a ``project``. None is a public entry (the seeded recipes, and what the
offline CLI adds to its own file): every reader sees it. The REST API writes entries in the
writing token's project, and a token sees its projects' entries and the public ones, and
deletes only its projects' (see ``service/api/policies.py``).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from losswatch.detectors.schedules import build_schedule

from ..ingest import LABEL_RULE, valid_label

TASK_FIELDS = ("model_family", "dataset", "optimizer", "batch_size")
SOURCES = ("seed", "user", "tune", "evaluate")
SQL_INT_MAX = 2**63 - 1  # SQLite's INTEGER: a larger Python int cannot be stored


def default_path() -> str:
    return os.environ.get("LOSSWATCH_POLICY_DB") or str(Path.home() / ".losswatch" / "policies.sqlite")


def _make_folder(folder: Path) -> None:
    """Create the database's folder if needed, and say so (on stderr, once: only the process
    that creates it): ``~/.losswatch`` should not appear in a home directory without a word."""
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        return
    print(f"losswatch: created {folder} for the LR policy database "
          f"(LOSSWATCH_POLICY_DB puts it elsewhere)", file=sys.stderr)


@dataclass
class PolicyEntry:
    """One outcome of one LR policy on one task. ``best_metric``/``final_metric`` may be None
    (a published recipe without a number); ``mode`` says whether lower ("min", a loss) or higher
    ("max", an accuracy) is better."""

    model_family: str
    dataset: str
    optimizer: str
    batch_size: int
    policy: dict[str, Any]
    metric: str = "loss"
    mode: str = "min"
    final_metric: float | None = None
    best_metric: float | None = None
    steps: int | None = None
    wall_time_s: float | None = None
    diverged: bool = False
    source: str = "user"
    notes: str = ""
    created_at: float = field(default_factory=time.time)
    #: the owning project; None = public (readable by every project)
    project: str | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PolicyEntry":
        """Validate a JSON object (REST body, CLI --json, tune results). ValueError names the field."""
        if not isinstance(d, dict):
            raise ValueError("a policy entry must be a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        for k in TASK_FIELDS + ("policy",):
            if d.get(k) is None:
                raise ValueError(f"missing field {k!r} (a task is {', '.join(TASK_FIELDS)}; plus a policy)")
        out: dict[str, Any] = {}
        for k in ("model_family", "dataset", "optimizer"):
            v = d[k]
            if not isinstance(v, str) or not v.strip() or len(v) > 200:
                raise ValueError(f"{k} must be a non-empty string (<= 200 characters), got {v!r}")
            out[k] = v.strip()
        out["batch_size"] = _int(d["batch_size"], "batch_size", minimum=1)
        if not isinstance(d["policy"], dict):
            raise ValueError(f"policy must be an LR schedule object, got {d['policy']!r}")
        out["policy"] = build_schedule(d["policy"]).to_spec()  # validates; normalises the name
        metric = d.get("metric", "loss")
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must be a name, got {metric!r}")
        out["metric"] = metric
        mode = d.get("mode", "min")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        out["mode"] = mode
        for k in ("final_metric", "best_metric", "wall_time_s"):
            v = d.get(k)
            if v is None:
                out[k] = None
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{k} must be a number or null, got {v!r}")
            if not math.isfinite(v):
                # a diverged run's NaN loss is told by diverged=true, not by a NaN metric
                raise ValueError(f"{k} must be finite (record a diverged run with diverged=true), got {v!r}")
            out[k] = float(v)
        out["steps"] = None if d.get("steps") is None else _int(d["steps"], "steps", minimum=0)
        if not isinstance(d.get("diverged", False), bool):
            raise ValueError(f"diverged must be true or false, got {d.get('diverged')!r}")
        out["diverged"] = d.get("diverged", False)
        source = d.get("source", "user")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        out["source"] = source
        notes = d.get("notes", "")
        if not isinstance(notes, str) or len(notes) > 4000:
            raise ValueError("notes must be a string of at most 4000 characters")
        out["notes"] = notes
        ca = d.get("created_at")
        if ca is not None:
            if isinstance(ca, bool) or not isinstance(ca, (int, float)) or not math.isfinite(ca):
                raise ValueError(f"created_at must be a Unix time in seconds, got {ca!r}")
            out["created_at"] = float(ca)
        project = d.get("project")
        if project is not None and not valid_label(project):
            raise ValueError(f"project must be {LABEL_RULE}, got {str(project)[:40]!r}")
        out["project"] = project
        return cls(**out)

    @property
    def score(self) -> float | None:
        """The metric the ranking uses: best if recorded, else final."""
        return self.best_metric if self.best_metric is not None else self.final_metric


def _int(v: Any, name: str, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v!r}")
    if v > SQL_INT_MAX:
        raise ValueError(f"{name} is too large ({v!r})")
    return int(v)


def _fold(s: str) -> str:
    """A task name as it compares: ASCII letters folded, as SQLite's NOCASE (the file's columns)."""
    return s.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def visible(e: PolicyEntry, projects: frozenset[str] | None) -> bool:
    """Public entries, and with ``projects`` those of these projects (None: every entry)."""
    return projects is None or e.project is None or e.project in projects


def entry_matches(e: PolicyEntry, *, model_family: str | None = None, dataset: str | None = None,
                  optimizer: str | None = None, batch_size: int | None = None, max_steps: int | None = None,
                  policy_name: str | None = None, metric: str | None = None, include_diverged: bool = True,
                  source: str | None = None, projects: frozenset[str] | None = None) -> bool:
    """The filters of a listing: the task's names compare case-insensitively (ASCII), the other
    fields exactly; ``max_steps`` keeps entries with a step count within it."""
    if not visible(e, projects):
        return False
    for have, want in ((e.model_family, model_family), (e.dataset, dataset), (e.optimizer, optimizer)):
        if want is not None and _fold(have) != _fold(want):
            return False
    for have, want in ((e.batch_size, batch_size), (e.policy["name"], policy_name), (e.metric, metric),
                       (e.source, source)):
        if want is not None and have != want:
            return False
    if max_steps is not None and (e.steps is None or e.steps > max_steps):
        return False
    return include_diverged or not e.diverged


def query(entries: Iterable[PolicyEntry], limit: int | None = 1000, **filters: Any) -> list[PolicyEntry]:
    """The entries matching ``filters`` (:func:`entry_matches`), oldest (lowest id) first."""
    return sorted((e for e in entries if entry_matches(e, **filters)), key=lambda e: e.id or 0)[:limit]


def rank_best(entries: list[PolicyEntry], metric: str | None) -> PolicyEntry | None:
    """The best of ``entries``: the best score (best_metric, else final_metric) in the entry's own
    direction, ties to fewer steps, then the older entry. Entries without a metric (published
    recipes) come after every measured one. Without ``metric``, scores of different metrics (a
    loss, an accuracy) do not compare: the ranking is within the metric most entries measured."""
    if not entries:
        return None
    if metric is None:
        counts: dict[str, int] = {}
        for e in entries:
            if e.score is not None:
                counts[e.metric] = counts.get(e.metric, 0) + 1
        if counts:
            top = max(sorted(counts), key=counts.__getitem__)
            entries = [e for e in entries if e.metric == top or e.score is None]

    def key(e: PolicyEntry) -> tuple:
        s = e.score
        if s is None:
            return (1, 0.0, e.steps or 0, e.id or 0)
        return (0, s if e.mode == "min" else -s, e.steps or 0, e.id or 0)

    return min(entries, key=key)


def best_of(entries: Iterable[PolicyEntry], **filters: Any) -> PolicyEntry | None:
    """The best non-diverged entry (unless ``include_diverged``) matching ``filters``."""
    filters.setdefault("include_diverged", False)
    return rank_best(query(entries, limit=None, **filters), filters.get("metric"))


# Published recipes. Metrics only where the source reports one for exactly this setting.
SEED_RECIPES: list[dict[str, Any]] = [
    {"model_family": "llama-7b", "dataset": "alpaca", "optimizer": "adamw", "batch_size": 128,
     "policy": {"name": "warmup_cosine", "lr": 2e-5, "warmup_ratio": 0.03, "total_steps": 1221},
     "steps": 1221, "source": "seed",
     "notes": "Stanford Alpaca instruction tuning of LLaMA-7B: 3 epochs of 52K examples at batch 128, "
              "lr 2e-5, cosine decay, warmup ratio 0.03, no weight decay."},
    {"model_family": "gpt2-124m", "dataset": "openwebtext", "optimizer": "adamw", "batch_size": 480,
     "policy": {"name": "warmup_cosine", "lr": 6e-4, "warmup_steps": 2000, "total_steps": 600000, "min_lr": 6e-5},
     "steps": 600000, "metric": "val_loss", "mode": "min", "final_metric": 2.85, "source": "seed",
     "notes": "nanoGPT GPT-2 124M reproduction: AdamW (0.9, 0.95), wd 0.1, ~0.5M tokens per step "
              "(480 x 1024), lr 6e-4, 2000 warmup steps, cosine to 6e-5 over 600K steps; val loss ~2.85."},
    {"model_family": "resnet-50", "dataset": "imagenet", "optimizer": "sgd", "batch_size": 256,
     "policy": {"name": "multistep", "lr": 0.1, "milestones": [30, 60, 90], "gamma": 0.1, "interval": "epoch",
                "steps_per_epoch": 5005},
     "steps": 450450, "metric": "top1_acc", "mode": "max", "final_metric": 0.7613, "source": "seed",
     "notes": "He et al. 2015 / torchvision reference: SGD momentum 0.9, wd 1e-4, batch 256, lr 0.1 divided "
              "by 10 at epochs 30, 60 (and 90 of 90); top-1 76.13% (torchvision ResNet50 V1 weights)."},
] + [
    {"model_family": "bert-base", "dataset": "glue", "optimizer": "adamw", "batch_size": 32,
     "policy": {"name": "warmup_linear", "lr": lr, "warmup_ratio": 0.1, "total_steps": 3 * 12272},
     "steps": 3 * 12272, "source": "seed",
     "notes": f"BERT-base fine-tuning (Devlin et al. 2019): lr in {{5e-5, 3e-5, 2e-5}} (this: {lr:g}), batch "
              "32, 2-4 epochs (3 on MNLI's 393K examples shown), linear decay after 10% warmup; pick by dev set."}
    for lr in (2e-5, 3e-5, 5e-5)
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_family TEXT NOT NULL COLLATE NOCASE,
    dataset TEXT NOT NULL COLLATE NOCASE,
    optimizer TEXT NOT NULL COLLATE NOCASE,
    batch_size INTEGER NOT NULL,
    policy TEXT NOT NULL,
    policy_name TEXT NOT NULL,
    metric TEXT NOT NULL,
    mode TEXT NOT NULL,
    final_metric REAL,
    best_metric REAL,
    steps INTEGER,
    wall_time_s REAL,
    diverged INTEGER NOT NULL,
    source TEXT NOT NULL,
    notes TEXT NOT NULL,
    created_at REAL NOT NULL,
    project TEXT
);
CREATE INDEX IF NOT EXISTS policies_task ON policies (model_family, dataset, optimizer, batch_size);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLS = ("model_family", "dataset", "optimizer", "batch_size", "policy", "policy_name", "metric", "mode",
         "final_metric", "best_metric", "steps", "wall_time_s", "diverged", "source", "notes", "created_at",
         "project")


class PolicyDB:
    """SQLite-backed policy database (thread-safe; one connection per instance, WAL mode).

    >>> import tempfile, os
    >>> db = PolicyDB(os.path.join(tempfile.mkdtemp(), "p.sqlite"))
    >>> db.best(model_family="gpt2-124m").policy["lr"]
    0.0006
    """

    def __init__(self, path: str | None = None, seed: bool = True) -> None:
        self.path = path or default_path()
        if self.path != ":memory:":
            _make_folder(Path(self.path).parent)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            if "project" not in {r[1] for r in self._db.execute("PRAGMA table_info(policies)")}:
                # a file from before entries had owners: its entries stay public
                self._db.execute("ALTER TABLE policies ADD COLUMN project TEXT")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path}: not a usable policy database ({e})") from None
        if seed:
            self._seed()

    def close(self) -> None:
        self._db.close()

    def _seed(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                done = self._db.execute("SELECT value FROM meta WHERE key='seeded'").fetchone()
                if not done:
                    for r in SEED_RECIPES:
                        self._insert(PolicyEntry.from_dict(r))
                    self._db.execute("INSERT INTO meta VALUES ('seeded', ?)", (str(time.time()),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _insert(self, e: PolicyEntry) -> int:
        row = (e.model_family, e.dataset, e.optimizer, e.batch_size, json.dumps(e.policy),
               e.policy["name"], e.metric, e.mode, e.final_metric, e.best_metric, e.steps, e.wall_time_s,
               int(e.diverged), e.source, e.notes, e.created_at, e.project)
        cur = self._db.execute(f"INSERT INTO policies ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))})", row)
        return int(cur.lastrowid)

    def add(self, entry: PolicyEntry | dict[str, Any]) -> PolicyEntry:
        """Store one entry (validated); returns it with its id."""
        e = entry if isinstance(entry, PolicyEntry) else PolicyEntry.from_dict(entry)
        with self._lock:
            e.id = self._insert(e)
        return e

    def add_many(self, entries: Iterable[PolicyEntry | dict[str, Any]]) -> list[PolicyEntry]:
        """Validate all, then store all in one transaction (all or nothing)."""
        es = [e if isinstance(e, PolicyEntry) else PolicyEntry.from_dict(e) for e in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for e in es:
                    e.id = self._insert(e)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return es

    def delete(self, entry_id: int, projects: frozenset[str] | None = None) -> bool:
        """Delete one entry; with ``projects``, only an entry owned by one of them (never a
        public one)."""
        where, args = "id = ?", [entry_id]
        if projects is not None:
            where += f" AND project IN ({', '.join('?' * len(projects))})"
            args += sorted(projects)
        with self._lock:
            return self._db.execute(f"DELETE FROM policies WHERE {where}", args).rowcount > 0

    def get(self, entry_id: int, projects: frozenset[str] | None = None) -> PolicyEntry | None:
        """One entry; with ``projects``, only if public or owned by one of them."""
        rows = self._select("id = ?", [entry_id])
        return rows[0] if rows and visible(rows[0], projects) else None

    def _select(self, where: str, args: list[Any], order: str = "id", limit: int | None = None) -> list[PolicyEntry]:
        sql = f"SELECT id, {', '.join(_COLS)} FROM policies WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        out = []
        for r in rows:
            d = dict(zip(("id",) + _COLS, r))
            d.pop("policy_name")
            d["policy"] = json.loads(d["policy"])
            d["diverged"] = bool(d["diverged"])
            out.append(PolicyEntry(**d))
        return out

    def _visible(self, projects: frozenset[str] | None) -> list[PolicyEntry]:
        """The public entries and, with ``projects``, only those projects' own (else all)."""
        return [e for e in self._select("1=1", []) if visible(e, projects)]

    def list(self, limit: int = 1000, **filters: Any) -> list[PolicyEntry]:
        """Entries matching the filters (:func:`entry_matches`), oldest first."""
        return query(self._visible(filters.get("projects")), limit=limit, **filters)

    def best(self, **filters: Any) -> PolicyEntry | None:
        """The best non-diverged entry for the filters ("best policy for this task under N
        steps" = ``best(model_family=..., max_steps=N)``; :func:`rank_best`)."""
        return best_of(self._visible(filters.get("projects")), **filters)
