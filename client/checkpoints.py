"""The checkpoints a run told losswatch about, and which one a rollback returns to.

``Monitor.checkpoint(step, path_or_token)`` adds one; the Actor asks :meth:`Checkpoints.before`
for the latest one saved before an incident began (never one inside the run-away). A path that no
longer exists is said once on the ``losswatch`` logger and the next older one is tried.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["Checkpoint", "Checkpoints"]

log = logging.getLogger("losswatch.checkpoints")


@dataclass(frozen=True)
class Checkpoint:
    """The state after ``step`` steps, saved at ``token`` (a path, or anything your code reads)."""

    step: int
    token: Any

    def path(self) -> str | None:
        """The token as a filesystem path, when it is one (a str or os.PathLike)."""
        if isinstance(self.token, (str, os.PathLike)):
            return os.fspath(self.token)
        return None

    def missing(self) -> bool:
        """A path token that no longer exists (a deleted checkpoint). Other tokens are trusted."""
        p = self.path()
        return p is not None and not os.path.exists(p)

    def to_dict(self) -> dict[str, Any]:
        """What the service is told: the step, and the path when the token is one."""
        p = self.path()
        return {"step": self.step, "path": p} if p is not None else {"step": self.step}


class Checkpoints:
    """A small bounded list of checkpoints, oldest first (``keep`` of them, default 8).

    Examples
    --------
    >>> cks = Checkpoints()
    >>> for s in (0, 100, 200):
    ...     _ = cks.add(s, {"tag": s})   # a str token would be a path, checked to exist
    >>> cks.before(150).token          # the incident began at step 150
    {'tag': 100}
    >>> cks.before(100).token          # a checkpoint at the incident's first step is inside it
    {'tag': 0}
    """

    def __init__(self, keep: int = 8) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self._items: deque[Checkpoint] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, step: int, token: Any) -> Checkpoint:
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"a checkpoint's step must be an int >= 0, got {step!r}")
        ck = Checkpoint(step, token)
        with self._lock:
            # a rewound run saves again at steps it saved before: the newer save replaces them
            while self._items and self._items[-1].step >= step:
                self._items.pop()
            self._items.append(ck)
        return ck

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(list(self._items))

    def latest(self) -> Checkpoint | None:
        with self._lock:
            return self._items[-1] if self._items else None

    def before(self, step: int) -> Checkpoint | None:
        """The latest checkpoint saved strictly before ``step`` that still exists, or None.

        A deleted path is one warning and is forgotten; the previous one is tried."""
        with self._lock:
            candidates = [ck for ck in self._items if ck.step < step]
        for ck in reversed(candidates):
            if not ck.missing():
                return ck
            log.warning("losswatch: the checkpoint of step %d (%s) no longer exists; trying the one "
                        "before it", ck.step, ck.path())
            with self._lock:
                try:
                    self._items.remove(ck)
                except ValueError:
                    pass
        return None
