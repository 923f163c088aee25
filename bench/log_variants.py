"""Class-preserving variants of a labelled real log: the same run, logged differently.

A rule whose verdict flips when the same run is logged less often, cut to an excerpt, measured in
other units or with fewer columns fits the file, not the class: other users log otherwise.
``variants(fields, rows, label, onset)`` returns every variant of one log that keeps its class
(bench/variants.py replays them). Each kind's docstring says which way of logging it stands for.

What keeps the class (``keeps_class``): a problem log's variant must keep the onset row and the
KEEP_AFTER rows after it (the rows its verdict is judged on), and a column where its failure
shows (``evidence_columns``: the validation loss for overfitting; for a loss that rises at the
onset, each loss column that rises there); a variant without them is skipped, not
counted. A healthy log has no onset: any variant of it is healthy. A variant with no data row,
or identical to the log or to a variant already made, is skipped too.

Rows are csv.DictReader rows (strings); a variant never changes the rows it is given. A kind
returns ``(columns, rows, onset)`` (the onset step moves with the step column), or None where it
does not apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable

LOSS_COLUMNS = ("loss", "val_loss")
KEEP_AFTER = 3  # rows after the onset kept with it (bench/real_logs.py's thinning keeps them too)
THIN_MIN_ROWS = 30  # a problem log shorter than this is mostly its kept onset rows when thinned
CUT_MARGIN = 5  # a cut never comes closer than this many rows before a problem log's onset


def number(v: str | None) -> float | None:
    try:
        return float(v) if v is not None and v.strip() else None
    except ValueError:
        return None


def has_values(rows: list[dict], column: str) -> bool:
    return any(number(r.get(column)) is not None for r in rows)


def onset_row(rows: list[dict], onset: int) -> int:
    """Index of the first row at or after step ``onset`` (len(rows) when none)."""
    return next((i for i, r in enumerate(rows) if int(float(r["step"])) >= onset), len(rows))


RISING = ("nan", "divergence", "divergence_slow", "spike")  # labels whose loss rises at the onset


NAN_COLUMNS = ("loss", "val_loss", "grad_norm")  # where a nan log's non-finite value can stand


def evidence_columns(fields: list[str], rows: list[dict], label: str, onset: int) -> set[str]:
    """The columns where a problem log's failure shows (empty for a healthy log): the validation
    loss for overfitting; for nan, each column with a non-finite value in the onset rows (a
    grad-norm or an evaluation that overflowed while the training loss stayed finite: without
    that column the log shows no NaN); for a loss that rises at the onset (nan without such a
    value, divergence, spike), each loss column with a value in the onset rows that is not
    finite or above its best before them; else (or when neither shows it) the training loss,
    or the validation loss on a log without one."""
    if label == "healthy":
        return set()
    if label == "overfitting":
        return {"val_loss"}
    o = onset_row(rows, onset)
    if label == "nan":
        onset_rows = rows[o:o + KEEP_AFTER + 1]
        shows = {c for c in NAN_COLUMNS
                 if any((v := number(r.get(c))) is not None and not math.isfinite(v) for r in onset_rows)}
        if shows:
            return shows
    shows = set()
    if label in RISING:
        for c in LOSS_COLUMNS:
            before = [v for v in (number(r.get(c)) for r in rows[:o]) if v is not None and math.isfinite(v)]
            after = [v for v in (number(r.get(c)) for r in rows[o:o + KEEP_AFTER + 1]) if v is not None]
            if any(not math.isfinite(v) or (before and v > min(before)) or not before for v in after):
                shows.add(c)
    return shows or {"loss" if "loss" in fields and has_values(rows, "loss") else "val_loss"}


class Log:
    """One log as a variant kind sees it: its columns, rows, label and the onset's row index."""

    def __init__(self, fields: list[str], rows: list[dict], label: str, onset: int):
        self.fields, self.rows, self.label, self.onset = fields, rows, label, onset
        self.problem = label != "healthy"
        self.o = onset_row(rows, onset) if self.problem else None
        self.evidence = evidence_columns(fields, rows, label, onset)

    def onset_rows(self) -> set[int]:
        """The rows a problem log's verdict is judged on: the onset row and KEEP_AFTER after it."""
        if not self.problem:
            return set()
        return set(range(self.o, min(self.o + KEEP_AFTER + 1, len(self.rows))))

    def keep(self, kept: set[int]) -> list[dict]:
        return [r for i, r in enumerate(self.rows) if i in kept | self.onset_rows()]

    def cut_at(self, pct: int) -> int:
        """First row kept when the first ``pct`` % of the rows is dropped: never closer than
        CUT_MARGIN rows before a problem log's onset, nor (overfitting) past the best evaluation
        before it, the level the rise is measured from."""
        cut = len(self.rows) * pct // 100
        if self.problem:
            cut = min(cut, self.o - CUT_MARGIN)
        if self.label == "overfitting":
            evals = [(number(r.get("val_loss")), i) for i, r in enumerate(self.rows[:self.o])]
            evals = [(v, i) for v, i in evals if v is not None]
            if evals:
                cut = min(cut, min(evals)[1])
        return cut


Variant = tuple[list[str], list[dict], int]  # columns, rows, the onset step in the variant's steps


TRAINING_COLUMNS = ("loss", "grad_norm", "lr")  # written with the training loss, on its line
EVALUATION_COLUMNS = ("val_loss",)


def grid_gap(rows: list[dict]) -> float:
    """The logging interval in steps: the median step gap of the training loss (of the
    evaluations in a log without one; of the rows in a log with neither); gaps of 0 (two lines
    at one step) are not intervals. 1 where no two distinct steps exist."""
    for c in (*LOSS_COLUMNS, None):
        steps = [float(r["step"]) for r in rows if c is None or number(r.get(c)) is not None]
        gaps = sorted(b - a for a, b in zip(steps, steps[1:]) if b > a)
        if gaps:
            return gaps[len(gaps) // 2]
    return 1.0


def thin_streams(rows: list[dict], k: int, keep: set[int] = frozenset()) -> list[dict]:
    """The log written ``k`` times less often: one grid of steps ``k`` x the logging interval
    (:func:`grid_gap`) wide, shared by every stream; each stream (the training loss, the
    evaluations, rows with neither: an LR or a grad-norm alone) keeps its first value in each
    cell of the grid; the rows in ``keep`` whole, besides (the grid is the steps', they do not
    shift it).

    One grid in steps for all, because a logger that writes less often writes less often in
    steps: an evaluation written on the training loss's line stays on it (a grid per stream
    that starts at each stream's first value put them on separate lines, as no logger writes
    them), and a trainer's evaluations on rows of their own every 55 or 375 rows are kept as
    evaluations, not dropped by where their period falls among the rows. A stream logged every
    interval (an epoch table) keeps one value in ``k``; one logged ``k`` intervals apart or less
    often keeps every value. A value that no stream of its row keeps is blanked in a copy of the
    row with the columns written with it (an evaluation kept alone takes the training loss's
    grad-norm and LR with it: the given rows are never changed, a row kept whole is passed on as
    it is); a row left with no value is dropped."""
    width = k * grid_gap(rows)
    last: dict[str | None, int] = {}  # the grid cell of each stream's last kept value
    out = []
    for i, r in enumerate(rows):
        cell = math.floor(float(r["step"]) / width)
        logged = [c for c in LOSS_COLUMNS if number(r.get(c)) is not None]
        kept = [c for c in logged or [None] if last.get(c) != cell]
        for c in kept:
            last[c] = cell
        if i in keep or (kept and len(kept) == len(logged or [None])):
            out.append(r)
        elif kept:
            blank = TRAINING_COLUMNS if "loss" not in kept else EVALUATION_COLUMNS
            out.append(dict(r, **{c: "" for c in blank if c in r}))
    return out


def _thin(k: int) -> Callable[[Log], Variant | None]:
    def thin(log: Log) -> Variant | None:
        if log.problem and len(log.rows) < THIN_MIN_ROWS:
            return None
        return log.fields, thin_streams(log.rows, k, log.onset_rows()), log.onset
    thin.__doc__ = (f"Each stream (training loss, evaluations) once per {k} logging intervals, on one grid "
                    f"of steps, a problem log's onset rows whole (:func:`thin_streams`): a log written "
                    f"{k} times less often.")
    return thin


def _last(pct: int) -> Callable[[Log], Variant | None]:
    def last(log: Log) -> Variant | None:
        cut = log.cut_at(100 - pct)
        return (log.fields, log.rows[cut:], log.onset) if cut >= 2 else None
    last.__doc__ = (f"The last {pct} % of the rows (a problem log keeps its onset and what leads to it): "
                    "a log that starts mid-run, or a resumed run.")
    return last


def _first(n: int) -> Callable[[Log], Variant | None]:
    def first(log: Log) -> Variant | None:
        return log.fields, log.rows[:n], log.onset
    first.__doc__ = f"Only the first {n} rows: an excerpt pasted into a thread."
    return first


def _loss(factor: float, shift: float, why: str) -> Callable[[Log], Variant | None]:
    def moved(log: Log) -> Variant | None:
        out = []
        for r in log.rows:
            r = dict(r)
            for c in LOSS_COLUMNS:
                v = number(r.get(c))
                if v is not None:
                    r[c] = repr(v * factor + shift)
            out.append(r)
        return log.fields, out, log.onset
    moved.__doc__ = why
    return moved


def _only(keep: tuple[str, ...], why: str) -> Callable[[Log], Variant | None]:
    def only(log: Log) -> Variant | None:
        fields = [f for f in log.fields if f == "step" or f in keep]
        return fields, [{k: v for k, v in r.items() if k in fields} for r in log.rows], log.onset
    only.__doc__ = why
    return only


def _without(column: str) -> Callable[[Log], Variant | None]:
    def without(log: Log) -> Variant | None:
        if not has_values(log.rows, column):
            return None
        fields = [f for f in log.fields if f != column]
        return fields, [{k: v for k, v in r.items() if k != column} for r in log.rows], log.onset
    without.__doc__ = f"The {column} column dropped: a trainer that does not log it."
    return without


def stepx10(log: Log) -> Variant | None:
    """The step column x10 (integer steps only): a log that counts micro-batches."""
    if not all(float(r["step"]) == int(float(r["step"])) for r in log.rows):
        return None
    return log.fields, [dict(r, step=str(int(float(r["step"])) * 10)) for r in log.rows], log.onset * 10


def thin_loss2(log: Log) -> Variant | None:
    """Every 2nd training-loss record, every evaluation kept: records logged less often than
    evaluations."""
    if not (has_values(log.rows, "loss") and has_values(log.rows, "val_loss")):
        return None
    records = [i for i, r in enumerate(log.rows) if number(r.get("loss")) is not None]
    evals = {i for i, r in enumerate(log.rows) if number(r.get("val_loss")) is not None}
    return log.fields, log.keep(set(records[::2]) | evals), log.onset


def thin_val2(log: Log) -> Variant | None:
    """Every 2nd evaluation, every training-loss record kept: evaluations run less often."""
    evals = [i for i, r in enumerate(log.rows) if number(r.get("val_loss")) is not None]
    if len(evals) < 2 or not has_values(log.rows, "loss"):
        return None
    dropped = set(evals[1::2]) - log.onset_rows()
    rows = [dict(r, val_loss="") if i in dropped else r for i, r in enumerate(log.rows)]
    return (log.fields, [r for r in rows if number(r.get("loss")) is not None or number(r.get("val_loss")) is not None],
            log.onset)


def _written(k: int, advance: bool) -> Callable[[Log], Variant | None]:
    def written(log: Log) -> Variant | None:
        if advance and not all(float(r["step"]) == int(float(r["step"])) for r in log.rows):
            return None
        if advance:
            out = [dict(r, step=str(int(float(r["step"])) * k + j)) for r in log.rows for j in range(k)]
        else:
            out = [dict(r) for r in log.rows for _ in range(k)]
        return log.fields, out, log.onset * k if advance else log.onset
    how = (f"on {k} steps in a row (the step column x{k}, a row's copies at steps {k}s .. {k}s+{k - 1})"
           if advance else "with the same step")
    written.__doc__ = (f"Every row written {k} times, {how}: a logger that prints its last values on "
                       "several lines (a GAN's discriminator and generator lines, a Trainer callback "
                       "that logs at every optimizer step what it measured once).")
    return written


KINDS: dict[str, Callable[[Log], Variant | None]] = {
    "thin2": _thin(2), "thin3": _thin(3), "thin5": _thin(5), "thin10": _thin(10),
    "thin_loss2": thin_loss2, "thin_val2": thin_val2,
    "last80pct": _last(80), "last70pct": _last(70), "last50pct": _last(50),
    "first8": _first(8), "first15": _first(15), "first30": _first(30),
    "stepx10": stepx10,
    "lossx0.1": _loss(0.1, 0.0, "Loss and val_loss x0.1: other units (a rule on the loss's ratio is scale-free)."),
    "lossx10": _loss(10.0, 0.0, "Loss and val_loss x10: other units, or a loss summed, not averaged."),
    "loss+1": _loss(1.0, 1.0, "Loss and val_loss +1: a regulariser or an entropy floor added to the loss."),
    "loss+5": _loss(1.0, 5.0, "Loss and val_loss +5: a large constant term in the logged loss."),
    "no_grad_norm": _without("grad_norm"), "no_lr": _without("lr"), "no_val_loss": _without("val_loss"),
    "loss_only": _only(("loss",), "Only the training loss: the plainest log."),
    "val_only": _only(("val_loss",), "Only the validation loss: a log of evaluations alone."),
    "rows_x2": _written(2, False), "rows_x4": _written(4, False),
    "rows_x2_steps": _written(2, True), "rows_x4_steps": _written(4, True),
}


def keeps_class(log: Log, fields: list[str], rows: list[dict]) -> bool:
    """Whether a variant still shows what its log's label says: some data rows, every onset row
    of a problem log, and the column its failure shows in."""
    if not rows or not (has_values(rows, "loss") or has_values(rows, "val_loss")):
        return False
    if not log.problem:
        return True
    if len(rows) < len(log.rows):  # rows dropped: a dropping kind passes the kept rows on as they are
        ids = {id(r) for r in rows}
        if not all(id(log.rows[i]) in ids for i in log.onset_rows()):
            return False
    return any(c in fields and has_values(rows, c) for c in log.evidence)


def variants(fields: list[str], rows: list[dict], label: str, onset: int) -> dict[str, Variant]:
    """``{kind: (columns, rows, onset)}``: the log itself as ``orig``, then every variant kind that
    keeps its class and differs from what is already there."""
    log = Log(fields, rows, label, onset)
    out: dict[str, Variant] = {"orig": (fields, rows, onset)}
    seen = [(fields, rows)]
    for name, make in KINDS.items():
        v = make(log)
        if v is None or not keeps_class(log, *v[:2]) or any(v[0] == f and v[1] == r for f, r in seen):
            continue
        seen.append(v[:2])
        out[name] = v
    return out
