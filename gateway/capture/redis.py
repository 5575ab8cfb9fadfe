"""``RedisCaptureSink``: records onto one Redis stream per task, each record id at most once.

Idempotency without Redis 8's ``XADD IDMP``: one Lua script per batch sets a marker key
``SET NX EX`` for each record id and adds the entry only when the marker was new. The
script runs atomically, so a write whose reply was lost (timeout, dropped connection)
and is then retried, or a spool segment replayed twice, leaves exactly one entry. Markers
expire after ``dedup_ttl_s``; a record replayed later than that could appear twice.

Keys share the task's hash tag (``distillgate:{task}:...``) so the script's keys live on
one slot in Redis Cluster as well. On a cluster the batch goes straight to the primary that
serves that slot (a refreshed map after any failure), in one pipeline on one connection, so
``WAIT`` there counts the replicas holding this very write.

Durability across a failover: Redis replicates asynchronously, so a primary killed right
after acknowledging a write may take it with it when its replica is promoted. With
``replica_acks`` > 0 a batch counts as stored only once that many replicas hold it (``WAIT``);
short of that it raises and the recorder spools it and replays it later, and the markers
make the replay exact whichever copy survived.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.capture.base import SCHEMA_VERSION, CaptureRecord
from gateway.errors import CaptureError
from gateway.redis_clients import AsyncRedis, async_redis

__all__ = ["RedisCaptureSink", "default_stream_name"]

logger = logging.getLogger(__name__)

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


def _connection_options(cluster: RedisCluster) -> dict[str, Any]:
    """The cluster client's connection options (credentials, TLS, timeouts) that one
    connection takes: its own bookkeeping (reply callbacks, notification handlers) is left out."""
    options = dict(cluster.get_connection_kwargs())
    kind = options.get("connection_class", aioredis.Connection)
    accepted = {"connection_class", "max_connections"}
    for cls in getattr(kind, "__mro__", ()):
        if "__init__" in vars(cls):
            accepted |= set(inspect.signature(vars(cls)["__init__"]).parameters)
    return {name: value for name, value in options.items() if name in accepted}


class RedisCaptureSink:
    """Writes batches with one round trip per task; raises ``CaptureError`` on any failure.

    ``stream_of(task)`` names a task's stream; ``maxlen`` trims it approximately (``~``),
    so Redis trims whole macro-nodes cheaply and the stream never grows without bound.
    """

    def __init__(
        self,
        client: AsyncRedis,
        *,
        stream_of: Callable[[str], str] = default_stream_name,
        maxlen: Callable[[str], int] = lambda _task: 1_000_000,
        dedup_ttl_s: int = 7 * 24 * 3600,
        timeout_s: float = 2.0,
        replica_acks: int = 0,
    ) -> None:
        self.client = client
        self.stream_of = stream_of
        self.maxlen = maxlen
        self.dedup_ttl_s = dedup_ttl_s
        self.timeout_s = timeout_s
        self.replica_acks = replica_acks
        self._primaries: dict[str, tuple[aioredis.Redis, AsyncScript]] = {}
        if not isinstance(client, RedisCluster):  # the one server owns every key
            self._primaries[""] = (client, client.register_script(_ADD_ONCE))
        self._stale_map = True
        self._degraded_logged = False

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> RedisCaptureSink:
        timeout = float(kwargs.get("timeout_s", 2.0))  # type: ignore[arg-type]
        client = async_redis(
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
                added += await asyncio.wait_for(self._write(task, batch), self.timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self._stale_map = True
            raise CaptureError(f"redis: {type(exc).__name__}: {exc}") from exc
        return added

    async def _write(self, task: str, batch: Sequence[CaptureRecord]) -> int:
        stream = self.stream_of(task)
        keys = [stream, *(_marker_key(stream, r.record_id) for r in batch)]
        args: list[str | int] = [self.maxlen(task), self.dedup_ttl_s, SCHEMA_VERSION, task]
        for r in batch:
            args += [r.record_id, r.route, r.to_json()]
        client, script = await self._primary(stream)
        async with client.pipeline(transaction=False) as pipe:
            await script(keys=keys, args=args, client=pipe)
            if self.replica_acks:
                wait_ms = max(int(self.timeout_s * 500), 1)  # half the budget, then spool
                pipe.execute_command("WAIT", self.replica_acks, wait_ms)
            replies = await pipe.execute()
        if self.replica_acks and int(replies[-1]) < self.replica_acks:
            await self._check_degraded(client, int(replies[-1]))
        return int(replies[0])

    async def _check_degraded(self, client: aioredis.Redis, acked: int) -> None:
        """Fewer replicas acknowledged than asked: fine only if every replica the primary has
        did (a promoted replica whose old primary is gone has none, and with no replica
        there is no failover that could lose the write); otherwise raise, and spool."""
        info = await client.info("replication")
        replicas = int(info.get("connected_slaves", 0))
        if acked < replicas:
            raise CaptureError(
                f"redis: {acked} of {self.replica_acks} replicas acknowledged the batch"
            )
        if not self._degraded_logged:
            logger.warning(
                "redis primary %s has %d of the %d replicas capture waits for: writing on",
                client.connection_pool.connection_kwargs.get("port"),
                replicas,
                self.replica_acks,
            )
            self._degraded_logged = True

    async def _primary(self, key: str) -> tuple[aioredis.Redis, AsyncScript]:
        """The client of the server that owns ``key``: the one server, or the slot's primary."""
        if not isinstance(self.client, RedisCluster):
            return self._primaries[""]
        if self._stale_map:
            await self.client.initialize()  # the first time; a no-op after
            await self.client.nodes_manager.initialize()  # the slot map as it is now
            self._stale_map = False
        node = self.client.get_node_from_key(key)
        if node is None:
            raise CaptureError(f"redis: no primary serves the slot of {key}")
        if node.name not in self._primaries:
            pool = aioredis.ConnectionPool(
                host=node.host, port=node.port, **_connection_options(self.client)
            )
            plain = aioredis.Redis(connection_pool=pool)
            self._primaries[node.name] = (plain, plain.register_script(_ADD_ONCE))
        return self._primaries[node.name]

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), self.timeout_s))
        except (RedisError, OSError, TimeoutError):
            return False

    async def aclose(self) -> None:
        for plain, _ in self._primaries.values():
            if plain is not self.client:
                await plain.aclose()
        await self.client.aclose()
