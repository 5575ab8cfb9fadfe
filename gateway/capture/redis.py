"""``RedisCaptureSink``: records onto one Redis stream per task, each record id at most once.

Idempotency without Redis 8's ``XADD IDMP``: one Lua script per batch sets a marker key
``SET NX EX`` for each record id and adds the entry only when the marker was new. The
script runs atomically, so a write whose reply was lost (timeout, dropped connection)
and is then retried, or a spool segment replayed twice, leaves exactly one entry. Markers
expire after ``dedup_ttl_s``; a record replayed later than that could appear twice.

Keys share the task's hash tag (``distillgate:{task}:...``) so the script's keys live on
one slot in Redis Cluster as well.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.capture.base import SCHEMA_VERSION, CaptureRecord
from gateway.errors import CaptureError

__all__ = ["RedisCaptureSink", "default_stream_name"]

_ADD_ONCE = """
local maxlen, ttl, version, task = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local added = 0
for i = 2, #KEYS do
  local at = 4 + (i - 2) * 3
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'v', version,
      'record_id', ARGV[at + 1], 'task', task, 'route', ARGV[at + 2], 'data', ARGV[at + 3])
    added = added + 1
  end
end
return added
"""


def default_stream_name(task: str) -> str:
    return f"distillgate:{{{task}}}:capture"


def _marker_key(stream: str, record_id: str) -> str:
    return f"{stream}:seen:{record_id}"


class RedisCaptureSink:
    """Writes batches with one round trip per task; raises ``CaptureError`` on any failure.

    ``stream_of(task)`` names a task's stream; ``maxlen`` trims it approximately (``~``),
    so Redis trims whole macro-nodes cheaply and the stream never grows without bound.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        stream_of: Callable[[str], str] = default_stream_name,
        maxlen: Callable[[str], int] = lambda _task: 1_000_000,
        dedup_ttl_s: int = 7 * 24 * 3600,
        timeout_s: float = 2.0,
    ) -> None:
        self.client = client
        self.stream_of = stream_of
        self.maxlen = maxlen
        self.dedup_ttl_s = dedup_ttl_s
        self.timeout_s = timeout_s
        self._script = client.register_script(_ADD_ONCE)

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> RedisCaptureSink:
        timeout = float(kwargs.get("timeout_s", 2.0))  # type: ignore[arg-type]
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        return cls(client, **kwargs)  # type: ignore[arg-type]

    async def write(self, records: Sequence[CaptureRecord]) -> int:
        """Store ``records``; return how many were new (the rest were already there)."""
        by_task: dict[str, list[CaptureRecord]] = defaultdict(list)
        for record in records:
            by_task[record.task].append(record)
        added = 0
        try:
            for task, batch in by_task.items():
                stream = self.stream_of(task)
                keys = [stream, *(_marker_key(stream, r.record_id) for r in batch)]
                args: list[str | int] = [
                    self.maxlen(task),
                    self.dedup_ttl_s,
                    SCHEMA_VERSION,
                    task,
                ]
                for r in batch:
                    args += [r.record_id, r.route, r.to_json()]
                added += int(
                    await asyncio.wait_for(self._script(keys=keys, args=args), self.timeout_s)
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise CaptureError(f"redis: {type(exc).__name__}: {exc}") from exc
        return added

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), self.timeout_s))
        except (RedisError, OSError, TimeoutError):
            return False

    async def aclose(self) -> None:
        await self.client.aclose()
