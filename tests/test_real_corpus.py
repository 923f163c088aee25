"""The real-log corpus (bench/real/) is consistent: every log has a label and a provenance entry
that agree, and every file is in the form the replay and the scorer read.

Checked on the files and their labels only; nothing here replays a log (the holdout part stays
untouched)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parents[1] / "bench" / "real"
LABELS = json.loads((REAL / "LABELS.json").read_text())
SOURCES = (REAL / "SOURCES.md").read_text()
KINDS = {"nan", "divergence", "divergence_slow", "spike", "lr_too_high", "lr_too_low", "dead", "overfitting", "healthy"}
SURE = {"high", "medium", "low"}
HEADER = ["step", "loss", "grad_norm", "lr", "val_loss"]
FILES = sorted(f"{p.parent.name}/{p.name}" for d in ("issues", "histories") for p in (REAL / d).glob("*.csv"))
ENTRY = re.compile(r"^### (\S+)\n(.*?)(?=^### |\Z)", re.M | re.S)
LABEL_LINE = re.compile(r"^- label: (\w+), onset step (-?\d+)(?: \([^)]*\))?, sure (\w+);", re.M)


def _entries() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for m in ENTRY.finditer(SOURCES):
        found.setdefault(m.group(1), []).append(m.group(2))
    return found


def test_every_log_has_a_label_and_every_label_a_log():
    assert set(LABELS) == set(FILES), (sorted(set(FILES) - set(LABELS)), sorted(set(LABELS) - set(FILES)))


def test_file_names_are_unique_across_the_two_folders():
    """The split hashes the file name alone: one name in both folders would share one part."""
    names = [f.split("/", 1)[1] for f in FILES]
    assert len(names) == len(set(names))


def test_no_log_is_stored_twice():
    """One log under two names would count twice and, when the names hash to different parts,
    put a file that was tuned on into the part reported untouched."""
    by_content: dict[str, list[str]] = {}
    for rel in FILES:
        by_content.setdefault((REAL / rel).read_text(), []).append(rel)
    assert [names for names in by_content.values() if len(names) > 1] == []


@pytest.mark.parametrize("rel", sorted(LABELS))
def test_a_label_is_in_the_scorers_form(rel):
    lab = LABELS[rel]
    assert set(lab) == {"label", "onset", "sure", "also"}
    assert lab["label"] in KINDS and lab["sure"] in SURE
    assert isinstance(lab["onset"], int) and not isinstance(lab["onset"], bool)
    for kind, onset in lab["also"]:
        assert kind in KINDS and isinstance(onset, int)


def test_every_log_has_one_provenance_entry_that_states_its_label():
    entries = _entries()
    for rel in FILES:
        assert len(entries.get(rel, [])) == 1, f"{rel}: {len(entries.get(rel, []))} SOURCES.md entries"
        body = entries[rel][0]
        assert "- source: " in body and "- what happened: " in body and "- transcribed: " in body, rel
        m = LABEL_LINE.search(body)
        assert m, f"{rel}: no label line"
        lab = LABELS[rel]
        assert (m.group(1), int(m.group(2)), m.group(3)) == (lab["label"], lab["onset"], lab["sure"]), rel
    assert set(entries) <= set(FILES), sorted(set(entries) - set(FILES))


@pytest.mark.parametrize("rel", FILES)
def test_a_log_is_a_csv_the_replay_reads(rel):
    """Header in the corpus's order, integer steps that strictly increase, every cell empty or a
    number (nan and inf included: they are what the logs printed)."""
    with open(REAL / rel, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER and len(rows) > 1
    steps = []
    for row in rows[1:]:
        assert len(row) == len(HEADER), (rel, row)
        steps.append(int(row[0]))
        for cell in row[1:]:
            if cell:
                float(cell)
        assert any(cell for cell in row[1:]), (rel, row)
    assert steps == sorted(steps) and len(set(steps)) == len(steps), rel
    assert all(math.isfinite(s) for s in steps)
