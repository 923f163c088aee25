"""The folder losswatch keeps its LR policy database in (~/.losswatch by default) does not appear
in a user's home without a word: the command that creates it says so on stderr, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def policies_list(home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSWATCH_")}
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "losswatch.service.cli", "policies", "list"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_policy_folder_is_announced_when_created_and_only_then(tmp_path):
    folder = tmp_path / ".losswatch"
    first = policies_list(tmp_path)
    assert first.returncode == 0, first.stderr
    assert folder.is_dir() and (folder / "policies.sqlite").is_file()
    assert first.stderr.count(f"created {folder}") == 1, first.stderr
    assert "LOSSWATCH_POLICY_DB" in first.stderr  # and how to put it elsewhere
    again = policies_list(tmp_path)
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stderr
    assert again.stdout == first.stdout  # the same (seeded) database, not a fresh one
