"""On-disk spool for rows the database could not take: append-only JSON-lines segment files.

Several processes (API workers, the Celery worker) share one spool folder, so each process
owns a sub-directory and holds an exclusive `flock` on its lock file for as long as it lives.
The kernel releases that lock when the process dies, however it dies; a sub-directory whose
lock can be taken therefore belongs to a dead process, and the next store adopts its segments.

Segment names start with their creation time in nanoseconds, so sorting names across owners
replays rows in the order they were spooled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"
LOCK_NAME = "owner.lock"
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024


class Spool:
    """A size-capped, fsync'd, thread-safe append-only log owned by this process."""

    def __init__(
        self, root: Path, max_bytes: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._dir: Path | None = None
        self._lock_fd: int | None = None
        self._active: IO[bytes] | None = None
        self._active_size = 0
        self._bytes = 0
        self._seq = 0

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def empty(self) -> bool:
        return self._bytes == 0

    def open(self) -> None:
        with self._lock:
            self._open_locked()

    def _open_locked(self) -> None:
        if self._dir is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Lock before the directory gets its final name, so no other process ever sees an
        # unlocked live directory and mistakes it for an orphan.
        staging = self.root / f".{owner}"
        staging.mkdir()
        fd = os.open(staging / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        final = self.root / owner
        staging.rename(final)
        self._dir, self._lock_fd = final, fd

    def append(self, lines: Sequence[bytes]) -> int:
        """Append whole lines while they fit under max_bytes; return how many were kept.

        Lines are kept in order: the first line that does not fit ends the append, so a later
        replay never sees a gap followed by newer rows.
        """
        with self._lock:
            self._open_locked()
            kept: list[bytes] = []
            total = self._bytes
            for line in lines:
                if total + len(line) > self.max_bytes:
                    break
                kept.append(line)
                total += len(line)
            if not kept:
                return 0
            data = b"".join(kept)
            if self._active is None or self._active_size >= self._segment_bytes:
                self._rotate()
            active = self._active
            assert active is not None
            try:
                active.write(data)
                active.flush()
                os.fsync(active.fileno())
            except OSError:
                # A torn line would swallow the next one at replay: cut back to the last
                # complete line and start a fresh segment next time.
                with contextlib.suppress(OSError):
                    active.truncate(self._active_size)
                self._close_active()
                raise
            self._active_size += len(data)
            self._bytes += len(data)
            return len(kept)

    def _rotate(self) -> None:
        self._close_active()
        assert self._dir is not None
        self._seq += 1
        path = self._dir / f"{time.time_ns():020d}-{self._seq:06d}{SEGMENT_SUFFIX}"
        self._active = path.open("ab")
        self._active_size = 0
        _fsync_dir(self._dir)

    def _close_active(self) -> None:
        if self._active is not None:
            with contextlib.suppress(OSError):
                self._active.close()
            self._active = None
            self._active_size = 0

    def take_segments(self) -> list[Path]:
        """Seal the segment being written and list every segment in replay order."""
        with self._lock:
            self._close_active()
            if self._dir is None:
                return []
            return sorted(self._dir.glob(f"*{SEGMENT_SUFFIX}"))

    def remove(self, segment: Path) -> None:
        with self._lock:
            try:
                size = segment.stat().st_size
                segment.unlink()
            except FileNotFoundError:
                return
            self._bytes = max(0, self._bytes - size)

    def adopt_orphans(self) -> int:
        """Move the segments of dead processes into this spool; return how many."""
        with self._lock:
            self._open_locked()
            assert self._dir is not None
            adopted = 0
            for other in sorted(self.root.iterdir()):
                if other == self._dir or other.name.startswith(".") or not other.is_dir():
                    continue
                adopted += self._adopt(other)
            if adopted:
                _fsync_dir(self._dir)
                log.info("adopted %d spool segment(s) left by stopped processes", adopted)
            return adopted

    def _adopt(self, other: Path) -> int:
        assert self._dir is not None
        try:
            fd = os.open(other / LOCK_NAME, os.O_RDWR)
        except FileNotFoundError:
            # Its owner removed the lock file while closing an empty spool.
            with contextlib.suppress(OSError):
                other.rmdir()
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live process owns it
            moved = 0
            for segment in sorted(other.glob(f"*{SEGMENT_SUFFIX}")):
                size = segment.stat().st_size
                segment.rename(self._dir / segment.name)
                self._bytes += size
                moved += 1
            with contextlib.suppress(OSError):
                (other / LOCK_NAME).unlink()
                other.rmdir()
            return moved
        finally:
            os.close(fd)

    def close(self) -> None:
        """Release ownership; an empty spool directory is removed, a non-empty one is left
        for the next store (here or in another process) to adopt."""
        with self._lock:
            self._close_active()
            if self._dir is None or self._lock_fd is None:
                return
            if not any(self._dir.glob(f"*{SEGMENT_SUFFIX}")):
                with contextlib.suppress(OSError):
                    (self._dir / LOCK_NAME).unlink()
                    self._dir.rmdir()
            os.close(self._lock_fd)
            self._dir, self._lock_fd = None, None
            self._bytes = 0


def read_segment(segment: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse a segment; return its rows and how many lines were unreadable."""
    rows: list[dict[str, Any]] = []
    bad = 0
    with segment.open("rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError:
                # orjson refuses what json reads: an integer beyond 64 bits, say.
                try:
                    row = json.loads(raw)
                except ValueError:
                    bad += 1
                    continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


def _fsync_dir(path: Path) -> None:
    """Make a new or renamed entry durable, not only the file's bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
