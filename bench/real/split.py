"""The fixed split of the real-log corpus: which files may be tuned on, which are reported only.

Decided before any file was collected or any detector was tuned on the corpus, and never changed:
a file's part depends on its name alone, so adding files later cannot move an old one across.

* ``public/`` (copies of ../shared/data/public-logs/): always ``tune`` (the detectors were tuned
  on those logs long before this corpus existed).
* every other file: ``tune`` when the first byte of the SHA-256 of its file name is even,
  ``holdout`` when it is odd (about half each).

The holdout part is for reporting only: nobody looks at its per-file verdicts while changing a
detector; its figures are computed once a change is settled.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

PARTS = ("tune", "holdout")


def part_of(rel: str) -> str:
    """``"tune"`` or ``"holdout"`` for a path relative to bench/real/ (e.g. "issues/x.csv")."""
    p = PurePosixPath(rel)
    if p.parts and p.parts[0] == "public":
        return "tune"
    return "tune" if hashlib.sha256(p.name.encode()).digest()[0] % 2 == 0 else "holdout"
