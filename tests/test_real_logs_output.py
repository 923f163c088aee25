"""What bench/real_logs.py prints of the untouched holdout part: figures only, never which files
(a name read while tuning is a file tuned on)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import real_logs  # noqa: E402


def figures() -> dict:
    cadence = {"problems": 3, "problems_right": 2, "failed": ["issues/a.csv"]}
    return {"full": dict(cadence), "thinned": dict(cadence, failed=[]), "changed": ["issues/a.csv", "issues/b.csv"],
            "rows": {"issues/a.csv": {}}, "thin_rows": {}}


def test_the_holdout_parts_file_names_are_shown_only_as_counts():
    shown = real_logs.shown("holdout", figures())
    assert shown["changed"] == 2 and shown["full"]["failed"] == 1 and shown["thinned"]["failed"] == 0
    assert "issues/" not in repr(shown)
    assert shown["full"]["problems_right"] == 2


def test_the_tune_parts_file_names_are_shown():
    shown = real_logs.shown("tune", figures())
    assert shown["changed"] == ["issues/a.csv", "issues/b.csv"] and shown["full"]["failed"] == ["issues/a.csv"]
    assert "rows" not in shown and "thin_rows" not in shown


def test_an_intake_list_selects_its_files_and_refuses_a_file_the_corpus_lacks():
    labels = {"issues/a.csv": {"label": "nan"}, "issues/b.csv": {"label": "healthy"}}
    assert real_logs.selected(labels, None) is labels
    assert real_logs.selected(labels, {"issues/b.csv"}) == {"issues/b.csv": {"label": "healthy"}}
    try:
        real_logs.selected(labels, {"issues/b.csv", "issues/typo.csv"})
    except ValueError as e:
        assert "issues/typo.csv" in str(e)
    else:
        raise AssertionError("a listed file that is not labelled was left out silently")
