"""Small helpers shared by the detector tests: replay a run, pick alerts."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path
from types import ModuleType

from losswatch.detectors import Engine
from losswatch.detectors.types import Record
from losswatch.service.readers import read_run

REAL = Path(__file__).resolve().parent.parent / "bench" / "real"  # the real-log corpus
BENCH = REAL.parent


def load_bench_script(name: str) -> ModuleType:
    """Import bench/NAME.py as a module: bench/ is not a package, and its scripts import their
    siblings and the corpus split (bench/real/split.py), so both folders go on sys.path."""
    for p in (BENCH, REAL):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def replay(losses=None, gns=None, lrs=None, vals=None, steps=None, meta=None):
    """Feed one run (lists, None = not logged) one record at a time; all alert changes."""
    n = max(len(x) for x in (losses, gns, lrs, vals) if x is not None)
    steps = steps or list(range(n))
    col = lambda xs, i: None if xs is None else xs[i]  # noqa: E731
    eng = Engine("t", meta)
    out = []
    for i in range(n):
        out += eng.update(Record(steps[i], col(losses, i), col(gns, i), col(lrs, i), col(vals, i)))
    return eng, out


def one_at_a_time(records, run_id="r", meta=None):
    """Feed Records one at a time through a fresh engine; (engine, all alert changes)."""
    eng = Engine(run_id, meta)
    out = []
    for r in records:
        out += eng.update(r)
    return eng, out


def in_batches(records, size, run_id="r", meta=None):
    """Feed Records through ``update_batch`` in chunks of ``size``; (engine, all alert changes)."""
    eng = Engine(run_id, meta)
    out = []
    for k in range(0, len(records), size):
        out += eng.update_batch(records[k:k + size])
    return eng, out


def raised(alerts, kind=None, min_severity="info"):
    """Alerts as first raised (one per episode), optionally of one kind and severity."""
    rank = {"info": 0, "warning": 1, "critical": 2}
    seen, out = set(), []
    for a in alerts:
        if a.id in seen:
            continue
        seen.add(a.id)
        if (kind is None or a.kind == kind) and rank[a.severity] >= rank[min_severity]:
            out.append(a)
    return out


def healthy_curve(n, seed=0, start=2.3, floor=0.3, tau=200.0, noise=0.03, lr=1e-3, gn=1.0):
    """A decaying loss with multiplicative noise, a steady grad-norm and a constant LR."""
    r = random.Random(seed)
    losses = [floor + (start - floor) * math.exp(-s / tau) for s in range(n)]
    losses = [x * (1.0 + r.gauss(0, noise)) for x in losses]
    gns = [gn * math.exp(r.gauss(0, 0.15)) for _ in range(n)]
    return losses, gns, [lr] * n


def in_tune_part(rel: str) -> bool:
    """Is ``rel`` (a path under bench/real/) in the real-log corpus's tune part (bench/real/split.py)?"""
    if str(REAL) not in sys.path:
        sys.path.insert(0, str(REAL))
    from split import part_of
    return part_of(rel) == "tune"


def tune_records(rel: str) -> list:
    """The records of a log of the real-log corpus's tune part. A holdout file fails the test
    that asks: that part stays untouched."""
    assert in_tune_part(rel), f"{rel} is in the untouched holdout part"
    return list(read_run(REAL / rel))

