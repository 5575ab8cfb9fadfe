"""One worker per task runs a round at a time.

With Redis reachable: a lease key (``SET NX PX``) holding this worker's token, renewed while
the round runs and released by a compare-and-delete script, so a crashed worker's lease
expires by itself and a slow one never deletes another's. Always, and alone without Redis
(the embedded default, one host): an exclusive ``flock`` on the task's registry folder.
With ``turns``, also one on the registry's root, which the tasks sharing it take in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from redis.exceptions import RedisError

from gateway.loop.registry import Registry
from gateway.redis_clients import AsyncRedis, async_redis

__all__ = ["Lease", "lease_key"]

logger = logging.getLogger(__name__)

TTL_MS = 60_000
_MINE = "if redis.call('get', KEYS[1]) == ARGV[1] then return "
_RELEASE = _MINE + "redis.call('del', KEYS[1]) end return 0"
_RENEW = _MINE + "redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"


def lease_key(task: str) -> str:
    return f"distillgate:{{{task}}}:loop-lease"


class Lease:
    @staticmethod
    @contextlib.asynccontextmanager
    async def take(
        redis_url: str | None, registry: Registry, task: str, *, turns: bool = False
    ) -> AsyncIterator[bool]:
        """Yields whether this worker holds the task's lease for the block: the Redis lease
        when Redis answers, and the registry's file lock always, so a worker that lost Redis
        mid-round still excludes one that falls back to the lock; with ``turns``, the
        registry root's lock as well (no other task's round is running beside it)."""
        async with _redis_lease(redis_url, task) as in_redis:
            if in_redis is False:
                yield False
                return
            with _file_lock(registry.dir / ".lease") as held:
                if not (held and turns):
                    yield held
                    return
                with _file_lock(registry.dir.parent / ".round") as turn:
                    yield turn


@contextlib.asynccontextmanager
async def _redis_lease(redis_url: str | None, task: str) -> AsyncIterator[bool | None]:
    """True: held; False: another worker holds it; None: no Redis (or unreachable)."""
    if not redis_url:
        yield None
        return
    client = async_redis(redis_url, socket_timeout=5)
    try:
        token = uuid.uuid4().hex
        try:
            taken = await client.set(lease_key(task), token, nx=True, px=TTL_MS)
        except RedisError:
            logger.info("task %s: Redis unreachable; leasing by file lock", task)
            yield None
            return
        if not taken:
            yield False
            return
        renew = asyncio.create_task(_renew(client, task, token))
        try:
            yield True
        finally:
            renew.cancel()
            with contextlib.suppress(RedisError):
                await client.eval(_RELEASE, 1, lease_key(task), token)
    finally:
        await client.aclose()


async def _renew(client: AsyncRedis, task: str, token: str) -> None:
    while True:
        await asyncio.sleep(TTL_MS / 3000)
        with contextlib.suppress(RedisError):
            await client.eval(_RENEW, 1, lease_key(task), token, TTL_MS)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
