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
from gateway.jobs.export import stream_records
from gateway.tasks import Task

__all__ = ["CaptureHistory", "spooled_records"]

logger = logging.getLogger(__name__)


def spooled_records(directory: Path, task: str) -> Iterator[CaptureRecord]:
    """The task's records waiting in a spool folder, read without consuming them."""
    for segment in sorted(directory.glob("*.jsonl")):
        try:
            lines = segment.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:  # replayed into Redis meanwhile: the stream has it
            continue
        for line in lines:
            if not line.endswith(b"\n"):
                break  # torn by a crash mid-write
            try:
                record = CaptureRecord.from_json(line)
            except ValueError:
                continue
            if record.task == task:
                yield record


@dataclass
class CaptureHistory:
    """Every record of a task: spools first, then the stream; each record id once."""

    redis_url: str | None
    spools: Sequence[Path] = ()
    problems: list[str] = field(default_factory=list)  # sources that could not be read
    _warned: bool = field(default=False, repr=False)

    def records(self, task: Task) -> list[CaptureRecord]:
        self.problems = []
        seen: dict[str, CaptureRecord] = {}
        for spool in self.spools:
            if spool.is_dir():
                for record in spooled_records(spool, task.name):
                    seen.setdefault(record.record_id, record)
        if self.redis_url:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=10, decode_responses=True)
            try:
                for record in stream_records(client, task):
                    seen.setdefault(record.record_id, record)
            except redis.RedisError as exc:
                self.problems.append(f"redis: {exc}")
                level = logging.DEBUG if self._warned else logging.WARNING  # once, not every poll
                logger.log(level, "task %s: the capture stream is unreadable: %s", task.name, exc)
                self._warned = True
            finally:
                client.close()
        return sorted(seen.values(), key=lambda r: r.captured_at)
