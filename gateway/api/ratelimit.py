"""Per-key rate limits: requests and tokens per minute, as token buckets, per process.

A bucket holds up to a minute's allowance and refills continuously, so a key may burst
to its per-minute limit and then proceeds at the steady rate. Requests are taken on
arrival; tokens are charged when the answer is known (prompt + completion) and may push
the bucket into debt, which refuses the key's next requests until it has refilled, the
way OpenAI's token limits behave. Limits are per gateway process: with N replicas behind
a load balancer a key gets up to N times its limit (docs/reliability.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.api.keys import ClientKey
from gateway.errors import RateLimited

__all__ = ["RateLimiter", "TokenBucket"]


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


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}

    def admit(self, key: ClientKey) -> None:
        """Take one request from ``key``'s allowance, or raise ``RateLimited`` (429)."""
        now = self.clock()
        if key.tokens_per_minute is not None:
            tokens = self._bucket(self._tokens, key.name, key.tokens_per_minute, now)
            wait = tokens.wait_for(1, now)  # in debt from earlier answers
            if wait > 0:
                raise RateLimited(
                    f"Rate limit reached for key {key.name!r}: "
                    f"{key.tokens_per_minute} tokens per minute.",
                    kind="tokens",
                    retry_after=wait,
                )
        if key.requests_per_minute is not None:
            requests = self._bucket(self._requests, key.name, key.requests_per_minute, now)
            wait = requests.wait_for(1, now)
            if wait > 0:
                raise RateLimited(
                    f"Rate limit reached for key {key.name!r}: "
                    f"{key.requests_per_minute} requests per minute.",
                    kind="requests",
                    retry_after=wait,
                )
            requests.take(1, now)

    def charge(self, key: ClientKey, tokens: int) -> None:
        if key.tokens_per_minute is not None and tokens > 0:
            now = self.clock()
            self._bucket(self._tokens, key.name, key.tokens_per_minute, now).take(tokens, now)

    @staticmethod
    def _bucket(
        buckets: dict[str, TokenBucket], name: str, per_minute: int, now: float
    ) -> TokenBucket:
        bucket = buckets.get(name)
        if bucket is None or bucket.per_minute != per_minute:  # new key, or its limit changed
            bucket = buckets[name] = TokenBucket(per_minute)
            bucket.updated = now
        return bucket
