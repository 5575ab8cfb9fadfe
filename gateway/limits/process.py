"""``ProcessRateLimiter``: a client key's buckets in this process.

Alone it serves one gateway; it is also what ``RedisRateLimiter`` (``redis.py``, the same
buckets shared by every replica) falls back to, with each limit divided by the replicas
expected, while Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.keys import ClientKey
from gateway.limits.base import refusal

__all__ = ["ProcessRateLimiter", "TokenBucket"]


@dataclass
class TokenBucket:
    per_minute: int
    level: float = field(init=False)
    updated: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.level = float(self.per_minute)

    def _refill(self, now: float) -> None:
        rate = self.per_minute / 60.0
        self.level = min(float(self.per_minute), self.level + (now - self.updated) * rate)
        self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available (0: available now)."""
        self._refill(now)
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / (self.per_minute / 60.0)

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount


class ProcessRateLimiter:
    """Buckets in this process; ``share``: each limit divided by it (at least 1 a minute)."""

    shared: bool | None = None  # per process by design

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, share: int = 1) -> None:
        self.clock = clock
        self.share = share
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}

    async def admit(self, key: ClientKey) -> None:
        self.check(key)

    def check(self, key: ClientKey) -> None:
        """``admit``, for callers that are not coroutines."""
        now = self.clock()
        if key.tokens_per_minute is not None:
            tokens = self._bucket(self._tokens, key.name, self._part(key.tokens_per_minute), now)
            wait = tokens.wait_for(1, now)  # in debt from earlier answers
            if wait > 0:
                raise refusal(key, "tokens", wait, self.share)
        if key.requests_per_minute is not None:
            per_minute = self._part(key.requests_per_minute)
            requests = self._bucket(self._requests, key.name, per_minute, now)
            wait = requests.wait_for(1, now)
            if wait > 0:
                raise refusal(key, "requests", wait, self.share)
            requests.take(1, now)

    def charge(self, key: ClientKey, tokens: int) -> None:
        if key.tokens_per_minute is not None and tokens > 0:
            now = self.clock()
            per_minute = self._part(key.tokens_per_minute)
            self._bucket(self._tokens, key.name, per_minute, now).take(tokens, now)

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()  # nothing to settle: every charge is already counted

    async def aclose(self) -> None:
        pass

    def _part(self, per_minute: int) -> int:
        return max(per_minute // self.share, 1)

    @staticmethod
    def _bucket(
        buckets: dict[str, TokenBucket], name: str, per_minute: int, now: float
    ) -> TokenBucket:
        bucket = buckets.get(name)
        if bucket is None or bucket.per_minute != per_minute:  # new key, or its limit changed
            bucket = buckets[name] = TokenBucket(per_minute)
            bucket.updated = now
        return bucket
