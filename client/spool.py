"""The records waiting to be sent: bounded in memory, spilled to disk beyond that, replayed in order.

Order is the whole point (the service feeds its detectors the in-order stream), so the spool is a
FIFO with one invariant: everything on disk is older than everything in memory. New records go to
the memory tail; when memory passes its bound, its OLDEST half is written as a new segment file
at the end of the disk part; reading takes the oldest disk segment first. Records are kept as
ready-to-send JSON strings, so a disk segment is plain JSON lines anyone can read or post by hand.

Only the background thread touches a Spool (no locking). Nothing is deleted from it until the
service acknowledged it (:meth:`Spool.pop` after a 2xx), so a failed POST is simply retried.
"""

from __future__ import annotations

import os
from collections import deque
from itertools import islice
from pathlib import Path


class Spool:
    """FIFO of JSON-encoded records: memory up to ``max_memory`` records, then disk segments.

    Parameters
    ----------
    directory : str or Path
        Where segments are written; created on the first spill only.
    max_memory : int
        Records kept in memory before the oldest half is spilled to a segment file.
    max_disk_bytes : int
        Bound on the segment files; past it the oldest segment is dropped (and counted in
        ``dropped``), because a full disk would hurt the training job more than lost metrics.

    Examples
    --------
    >>> import tempfile
    >>> s = Spool(tempfile.mkdtemp(), max_memory=6)
    >>> s.extend([f'{{"step": {i}}}' for i in range(10)])
    >>> len(s), s.on_disk > 0
    (10, True)
    >>> s.peek(3)
    ['{"step": 0}', '{"step": 1}', '{"step": 2}']
    >>> s.pop(3); s.peek(1)
    ['{"step": 3}']
    """

    def __init__(self, directory: str | os.PathLike, max_memory: int = 100_000,
                 max_disk_bytes: int = 1 << 30) -> None:
        self.directory = Path(directory)
        self.max_memory = max(2, int(max_memory))
        self.max_disk_bytes = int(max_disk_bytes)
        self._head: deque[str] = deque()   # loaded from the oldest segment; older than the rest
        self._segments: deque[tuple[Path, int, int]] = deque()  # (path, records, bytes)
        self._mem: deque[str] = deque()    # newest
        self._seq = 0
        self._disk_records = 0
        self._disk_bytes = 0
        self.dropped = 0      # records lost to the disk bound (or to a disk that refused them)
        self.spill_error: str | None = None  # why the last spill failed, if it did
        self.spilled = 0      # records ever written to disk

    def __len__(self) -> int:
        return len(self._head) + self._disk_records + len(self._mem)

    @property
    def on_disk(self) -> int:
        """Records currently in segment files."""
        return self._disk_records

    def extend(self, lines: list[str]) -> None:
        """Append records (newest last); spill the oldest in-memory half when over the bound."""
        self._mem.extend(lines)
        while len(self._mem) > self.max_memory:
            if not self._spill(self.max_memory // 2):
                # the disk refused (full, read-only, no permission): memory is all that is left;
                # allow twice the bound there, then drop the oldest (counted) rather than grow
                while len(self._mem) > 2 * self.max_memory:
                    self._mem.popleft()
                    self.dropped += 1
                break

    def _spill(self, n: int) -> bool:
        n = min(n, len(self._mem))
        if not n:
            return True
        chunk = list(islice(self._mem, n))  # indexing a deque's middle is O(n) a time
        path = self.directory / f"{os.getpid()}-{self._seq:09d}.jsonl"
        data = ("\n".join(chunk) + "\n").encode()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            self.spill_error = f"{type(e).__name__}: {e}"
            self._unlink(path)
            return False
        for _ in range(n):  # only now: a failed write loses nothing
            self._mem.popleft()
        self._seq += 1
        self._segments.append((path, n, len(data)))
        self._disk_records += n
        self._disk_bytes += len(data)
        self.spilled += n
        while self._disk_bytes > self.max_disk_bytes and len(self._segments) > 1:
            old, n_old, b_old = self._segments.popleft()
            self._unlink(old)
            self._disk_records -= n_old
            self._disk_bytes -= b_old
            self.dropped += n_old
        return True

    def _load_segment(self) -> None:
        path, n, b = self._segments.popleft()
        self._disk_records -= n
        self._disk_bytes -= b
        try:
            with open(path, "rb") as f:
                lines = f.read().decode().splitlines()
        except OSError:
            self.dropped += n  # someone removed our file: nothing else to do but count it
            lines = []
        self._unlink(path)
        self._head.extend(line for line in lines if line)

    def peek(self, n: int) -> list[str]:
        """The oldest ``n`` records (fewer when that source runs out), without removing them."""
        if not self._head and self._segments:
            self._load_segment()
        src = self._head if self._head else self._mem
        return [src[i] for i in range(min(n, len(src)))]

    def pop(self, n: int) -> None:
        """Remove the ``n`` records returned by the last :meth:`peek` (they were delivered)."""
        src = self._head if self._head else self._mem
        for _ in range(min(n, len(src))):
            src.popleft()

    def spill_all(self) -> Path | None:
        """Write every record still held, in order, to one file (at exit, service unreachable).

        Returns that file's path, or None when nothing was left. It holds JSON lines, one record
        each, ready to be posted again (``{"records": [...]}``) once the service is back.
        """
        if not len(self):
            return None
        lines: list[str] = []
        while len(self):
            batch = self.peek(10_000)
            lines.extend(batch)
            self.pop(len(batch))
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"unsent-{os.getpid()}.jsonl"
        with open(path, "ab") as f:
            f.write(("\n".join(lines) + "\n").encode())
        return path

    def remove_directory_if_empty(self) -> None:
        """Tidy up our spool directory when nothing is left in it."""
        try:
            self.directory.rmdir()
        except OSError:
            pass

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass
