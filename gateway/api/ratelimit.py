"""Per-key rate limits: requests and tokens per minute, as token buckets, per process.

A bucket holds up to a minute's allowance and refills continuously, so a key may burst
to its per-minute limit and then proceeds at the steady rate. Requests are taken on
arrival; tokens are charged when the answer is known (prompt + completion) and may push
the bucket into debt, which refuses the key's next requests until it has refilled, the
way OpenAI's token limits behave.

``ProcessRateLimiter`` keeps the buckets in this process: alone it serves one gateway, and it
is what ``RedisRateLimiter`` (``redis_ratelimit.py``, the same buckets shared by every replica)
falls back to, with each limit divided by the replicas expected, while Redis is unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.api.keys import ClientKey
from gateway.errors import RateLimited

__all__ = ["ProcessRateLimiter", "RateLimiter", "TokenBucket", "refusal"]


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


class RateLimiter(Protocol):
    """Where a client key's allowance is kept: this process, or Redis for the whole fleet."""

    async def admit(self, key: ClientKey) -> None:
        """Take one request from ``key``'s allowance, or raise ``RateLimited`` (429)."""

    def charge(self, key: ClientKey, tokens: int) -> None:
        """Count an answer's tokens against ``key`` (never refuses: the answer is given)."""


def refusal(key: ClientKey, kind: str, wait: float, share: int = 1) -> RateLimited:
    per_minute = key.tokens_per_minute if kind == "tokens" else key.requests_per_minute
    where = (
        f" (this replica's 1/{share} while the shared limits are unreachable)" if share > 1 else ""
    )
    return RateLimited(
        f"Rate limit reached for key {key.name!r}: {per_minute} {kind} per minute{where}.",
        kind=kind,
        retry_after=wait,
    )


class ProcessRateLimiter:
    """Buckets in this process; ``share``: each limit divided by it (at least 1 a minute)."""

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
