"""Where a round reads what was captured: the Redis stream, and spool folders.

A record waits in a gateway's spool while Redis is down and moves to the stream when it is
back (written there before it leaves the spool), so reading the spools first and the stream
second sees every record at least once; record ids make the union exact. On the embedded
default with no Redis server at all, the spool is the whole history.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from gateway.capture.base import CaptureRecord
from gateway.jobs.export import stream_entries
from gateway.redis_clients import sync_redis
from gateway.tasks import Task

__all__ = ["CaptureHistory", "spooled_records"]

logger = logging.getLogger(__name__)


def spooled_records(directory: Path, task: str) -> Iterator[CaptureRecord]:
    """The task's records waiting in a spool folder, read without consuming them."""
    for segment in sorted(directory.glob("*.jsonl")):
        for record, _ in _segment_records(segment, task, 0):
            yield record


def _segment_records(segment: Path, task: str, offset: int) -> Iterator[tuple[CaptureRecord, int]]:
    """The task's records of one spool segment from byte ``offset``, each with the offset
    after its line (a torn last line is left for the next read)."""
    try:
        with segment.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:  # replayed into Redis meanwhile: the stream has it
        return
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            return  # torn by a crash mid-write, or being written
        offset += len(line)
        try:
            record = CaptureRecord.from_json(line)
        except ValueError:
            continue
        if record.task == task:
            yield record, offset


@dataclass
class CaptureHistory:
    """Every record of a task: spools first, then the stream; each record id once.

    Incremental: each call reads only what is new since the last (the stream after the last
    entry id seen, each spool segment after the last complete line), so a worker polling
    every few seconds does not re-read a history of millions of records. What was read stays
    known even when the stream is trimmed or a spool segment is replayed and deleted.
    """

    redis_url: str | None
    spools: Sequence[Path] = ()
    problems: list[str] = field(default_factory=list)  # sources that could not be read
    _warned: bool = field(default=False, repr=False)
    _known: dict[str, dict[str, CaptureRecord]] = field(default_factory=dict, repr=False)
    _stream_after: dict[str, str] = field(default_factory=dict, repr=False)
    _spool_offsets: dict[tuple[str, Path], int] = field(default_factory=dict, repr=False)

    def records(self, task: Task) -> list[CaptureRecord]:
        self.problems = []
        seen = self._known.setdefault(task.name, {})
        for spool in self.spools:
            if spool.is_dir():
                for segment in sorted(spool.glob("*.jsonl")):
                    key = (task.name, segment)
                    start = self._spool_offsets.get(key, 0)
                    for record, offset in _segment_records(segment, task.name, start):
                        seen.setdefault(record.record_id, record)
                        self._spool_offsets[key] = offset
        if self.redis_url:
            client = sync_redis(self.redis_url, socket_timeout=10, decode_responses=True)
            after = self._stream_after.get(task.name, "-")
            try:
                for entry_id, entry in stream_entries(client, task, after=after):
                    if entry is not None:
                        seen.setdefault(entry.record_id, entry)
                    self._stream_after[task.name] = entry_id
            except redis.RedisError as exc:
                self.problems.append(f"redis: {exc}")
                level = logging.DEBUG if self._warned else logging.WARNING  # once, not every poll
                logger.log(level, "task %s: the capture stream is unreadable: %s", task.name, exc)
                self._warned = True
            finally:
                client.close()
        return sorted(seen.values(), key=lambda r: r.captured_at)
