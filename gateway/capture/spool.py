"""``Spool``: where records wait on local disk while Redis is down or slow.

Append-only JSONL segment files (``000000000001.jsonl``, ...) in one folder per gateway
instance. Each ``append`` writes a batch and fsyncs it once, so a record the recorder has
handed to the spool survives a crash of the process. Reading is in order from the oldest
segment; a fully replayed segment is deleted. The read position is kept in memory only: a
restart replays the oldest segment from its start, which the sink's idempotent record ids
make harmless.

The spool is size-capped: ``append`` refuses (and counts) what would exceed ``max_bytes``,
because a full disk would take the whole host down, gateway included. Plain blocking I/O:
the recorder calls it through ``asyncio.to_thread``, never on the event loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from gateway.capture.base import CaptureRecord

__all__ = ["Spool"]

logger = logging.getLogger(__name__)


class Spool:
    def __init__(
        self, directory: str | Path, *, max_bytes: int = 1 << 30, segment_bytes: int = 4 << 20
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segments = sorted(self.directory.glob("*.jsonl"))
        self._read_offset = 0  # into self._segments[0]
        self._tail_is_ours = False  # never append to a segment a previous process left
        self.size_bytes = sum(p.stat().st_size for p in self._segments)

    # -- writing ---------------------------------------------------------------------------
    def append(self, records: Sequence[CaptureRecord]) -> int:
        """Write and fsync ``records`` in order; return how many fitted under the cap."""
        lines: list[bytes] = []
        room = self.max_bytes - self.size_bytes
        for record in records:
            line = (record.to_json() + "\n").encode()
            if len(line) > room:
                break
            lines.append(line)
            room -= len(line)
        if not lines:
            return 0
        tail = self._tail_for_append()
        data = b"".join(lines)
        with tail.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.size_bytes += len(data)
        return len(lines)

    def _tail_for_append(self) -> Path:
        """The segment to append to: ours if it has room, else a new one (a segment left by
        a crashed process may end in a torn line, which must not swallow the next record)."""
        if (
            self._tail_is_ours
            and self._segments
            and self._segments[-1].stat().st_size < self.segment_bytes
        ):
            return self._segments[-1]
        number = int(self._segments[-1].stem) + 1 if self._segments else 1
        path = self.directory / f"{number:012d}.jsonl"
        path.touch()
        _fsync_dir(self.directory)  # the new file's name is durable too
        self._segments.append(path)
        self._tail_is_ours = True
        return path

    # -- replaying -------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return self.size_bytes > 0

    def peek(self, limit: int) -> tuple[list[CaptureRecord], int]:
        """Up to ``limit`` records from the read position, and the bytes they span.

        Unreadable lines (a torn write at a crash) are logged and skipped.
        """
        records: list[CaptureRecord] = []
        consumed = 0
        if not self._segments:
            return records, consumed
        with self._segments[0].open("rb") as f:
            f.seek(self._read_offset)
            for line in f:
                consumed += len(line)
                if not line.endswith(b"\n"):  # torn by a crash mid-write: never fsync'd
                    logger.error("spool %s: skipping a torn last line", f.name)
                    break
                try:
                    records.append(CaptureRecord.from_json(line))
                except ValueError as exc:
                    logger.error("spool %s: skipping an unreadable record: %s", f.name, exc)
                if len(records) >= limit:
                    break
        return records, consumed

    def commit(self, consumed: int) -> None:
        """Mark ``consumed`` bytes (from ``peek``) as delivered; drop finished segments."""
        head = self._segments[0]
        self._read_offset += consumed
        if self._read_offset >= head.stat().st_size:
            self.size_bytes -= head.stat().st_size
            head.unlink()
            self._segments.pop(0)
            self._read_offset = 0
            self._skip_empty_segments()

    def _skip_empty_segments(self) -> None:
        while self._segments and self._segments[0].stat().st_size == 0:
            self._segments.pop(0).unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
