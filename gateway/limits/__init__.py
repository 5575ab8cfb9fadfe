"""Per-key rate limits: requests and tokens per minute, as token buckets.

A bucket holds up to a minute's allowance and refills continuously, so a key may burst
to its per-minute limit and then proceeds at the steady rate. Requests are taken on
arrival; tokens are charged when the answer is known (prompt + completion) and may push
the bucket into debt, which refuses the key's next requests until it has refilled, the
way OpenAI's token limits behave.

``open_limiter`` picks where the buckets live: in Redis, one allowance for every replica
(``redis.py``), unless told otherwise or there is no Redis (``process.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.limits.base import RateLimiter, refusal
from gateway.limits.process import ProcessRateLimiter
from gateway.limits.redis import RedisRateLimiter
from gateway.settings import Settings

__all__ = ["ProcessRateLimiter", "RateLimiter", "RedisRateLimiter", "open_limiter", "refusal"]


def open_limiter(settings: Settings, *, on_fallback: Callable[[], None]) -> RateLimiter:
    """Fleet-wide limits in Redis unless asked otherwise (or there is no Redis)."""
    if settings.rate_limits == "process" or not settings.redis_url:
        return ProcessRateLimiter()
    return RedisRateLimiter.from_url(
        settings.redis_target,
        replicas=settings.rate_limit_replicas,
        timeout_s=settings.rate_limit_timeout_s,
        on_fallback=on_fallback,
    )
