"""One worker per task runs a round at a time.

With Redis reachable: a lease key (``SET NX PX``) holding this worker's token, renewed while
the round runs and released by a compare-and-delete script, so a crashed worker's lease
expires by itself and a slow one never deletes another's. Always, and alone without Redis
(the embedded default, one host): an exclusive ``flock`` on the task's registry folder.
With ``turns``, also one on the registry's root, which the tasks sharing it take in turn,
in an order (``_Turns``): the task whose last round ended longest ago first (one that never
ran, first of all), then the higher ``priority``, then the one that has waited longest.

A state that repeats every poll (Redis unreachable, another task's turn) is logged once
when it begins and once when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
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
    """A task's lease, taken once per round by its worker (``take``); ``why`` says why the
    last ``take`` did not hold it."""

    def __init__(
        self,
        redis_url: str | None,
        registry: Registry,
        task: str,
        *,
        turns: bool = False,
        priority: int = 0,
        poll_s: float = 5.0,
        settle_s: float = 0.0,
    ) -> None:
        self.redis_url, self.registry, self.task = redis_url, registry, task
        self.turns = _Turns(registry.dir.parent, task, priority, poll_s) if turns else None
        self.settle_s = settle_s  # a first turn waits this long for other tasks to ask
        self.why = ""
        self._redis_down = False

    @contextlib.asynccontextmanager
    async def take(self, last_round_at: float = 0.0) -> AsyncIterator[bool]:
        """Yields whether this worker holds the task's lease for the block: the Redis lease
        when Redis answers, and the registry's file lock always, so a worker that lost Redis
        mid-round still excludes one that falls back to the lock; with ``turns``, the
        registry root's lock as well, when it is this task's turn (``last_round_at``: when
        its last round ended, epoch seconds, 0 for never)."""
        async with _redis_lease(self.redis_url, self.task) as in_redis:
            self._note_redis(in_redis is None and bool(self.redis_url))
            if in_redis is False:
                self.why = "another worker holds the task's lease"
                yield False
                return
            with _file_lock(self.registry.dir / ".lease") as held:
                if not held:
                    self.why = "another worker holds the task's lease"
                if not (held and self.turns):
                    yield held
                    return
                ahead = self.turns.ahead(last_round_at, self.settle_s)
                if ahead is not None:
                    self.why = ahead
                    yield False
                    return
                with _file_lock(self.registry.dir.parent / ".round") as turn:
                    if not turn:
                        self.why = "another task's round runs"
                    try:
                        yield turn
                    finally:
                        if turn:
                            self.turns.done()

    def _note_redis(self, down: bool) -> None:
        if down and not self._redis_down:
            logger.warning("task %s: Redis unreachable; leasing by file lock", self.task)
        elif self._redis_down and not down:
            logger.info("task %s: Redis answers again; leasing in Redis", self.task)
        self._redis_down = down


class _Turns:
    """The order in which tasks sharing a registry root take their turns: each waiting
    task keeps a marker (``.turns/<task>.json``) fresh while it waits; a marker not
    refreshed for three polls is a worker gone, and ignored."""

    def __init__(self, root: Path, task: str, priority: int, poll_s: float) -> None:
        self.dir, self.task, self.priority = root / ".turns", task, priority
        self.stale_s = 3 * poll_s + 5
        self._since: float | None = None

    def ahead(self, last_round_at: float, settle_s: float) -> str | None:
        """Mark this task waiting; None when it goes now, else who goes first."""
        now = time.time()
        if self._since is None:
            self._since = now
        mine = {"priority": self.priority, "last_round_at": last_round_at, "since": self._since}
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{self.task}.json").write_text(json.dumps(mine))
        if now - self._since < settle_s:  # let tasks started together all ask first
            return "waiting for the other tasks to ask for their turn"
        for path in sorted(self.dir.glob("*.json")):
            other = path.stem
            try:
                if other == self.task or now - path.stat().st_mtime > self.stale_s:
                    continue
                theirs = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if _order(theirs, other) < _order(mine, self.task):
                return f"task {other}'s turn comes first"
        return None

    def done(self) -> None:
        self._since = None
        with contextlib.suppress(OSError):
            (self.dir / f"{self.task}.json").unlink()


def _order(marker: dict[str, float], task: str) -> tuple[float, float, float, str]:
    return (marker["last_round_at"], -marker["priority"], marker["since"], task)


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
