"""``RedisRateLimiter``: a client key's buckets in Redis, one allowance for every replica.

Each admission is one script call (``EVALSHA``) that refills the key's request and token
buckets from the server's clock, settles the tokens this replica charged since its last call,
and takes the request, atomically: no lock, one round trip, the same arithmetic as
``ProcessRateLimiter``. Tokens are charged after the answer without a round trip of their
own; they ride on the key's next admission, or on the flush every ``flush_s`` for a key
that has gone quiet.

When Redis does not answer within ``timeout_s`` the replica decides alone, with buckets of
limit / ``replicas`` (so the fleet as a whole stays near the limit), logs that once, counts
each such decision (``on_fallback``), and probes Redis every ``retry_s`` off the request path
(with the time a reconnect, a new slot map and a script load take, which a request's short
timeout would cut off each time) until it answers. Redis trouble
never refuses a request that the fallback buckets allow, and never lifts the limits.
The bucket key carries the client key's name as its hash tag: a single slot on a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.keys import ClientKey
from gateway.limits.base import refusal
from gateway.limits.process import ProcessRateLimiter
from gateway.redis_clients import AsyncRedis, async_redis

__all__ = ["RedisRateLimiter", "bucket_key"]

logger = logging.getLogger(__name__)

# ARGV: requests per minute (0: none), tokens per minute (0: none), tokens owed, take a
# request (1) or only settle tokens (0). Returns {refused kind or '', seconds to wait}.
_ADMIT = """
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local owed, take = tonumber(ARGV[3]), ARGV[4] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'r', 'r_at', 'r_of', 't', 't_at', 't_of')
local function level(value, at, of, per)
  if not value or tonumber(of) ~= per then return per end
  return math.min(per, tonumber(value) + (now - tonumber(at)) * per / 60)
end
local refused, wait, full_in = '', 0, 0
if tpm > 0 then
  local tokens = level(b[4], b[5], b[6], tpm) - owed
  if take and tokens < 1 then refused, wait = 'tokens', (1 - tokens) * 60 / tpm end
  redis.call('HSET', KEYS[1], 't', tokens, 't_at', now, 't_of', tpm)
  full_in = math.max(full_in, (tpm - tokens) * 60 / tpm)
end
if rpm > 0 then
  local requests = level(b[1], b[2], b[3], rpm)
  if take and refused == '' then
    if requests < 1 then refused, wait = 'requests', (1 - requests) * 60 / rpm
    else requests = requests - 1 end
  end
  redis.call('HSET', KEYS[1], 'r', requests, 'r_at', now, 'r_of', rpm)
  full_in = math.max(full_in, (rpm - requests) * 60 / rpm)
end
redis.call('PEXPIRE', KEYS[1], math.ceil(full_in * 1000) + 1000)
return {refused, tostring(wait)}
"""


_PROBE_S = 2.0  # how long a probe of an unreachable Redis may take


def bucket_key(name: str) -> str:
    return f"distillgate:{{key:{name}}}:limits"


class RedisRateLimiter:
    def __init__(
        self,
        client: AsyncRedis,
        *,
        replicas: int = 1,
        timeout_s: float = 0.1,
        retry_s: float = 1.0,
        flush_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_fallback: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.fallback = ProcessRateLimiter(clock, share=replicas)
        self.timeout_s, self.retry_s, self.flush_s = timeout_s, retry_s, flush_s
        self.on_fallback = on_fallback
        self.shared: bool | None = True  # False while Redis is unreachable
        self._owed: dict[str, tuple[ClientKey, int]] = {}
        self._script = client.register_script(_ADMIT)
        self._probe: asyncio.Future[None] | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> RedisRateLimiter:
        # Requests wait at most timeout_s (asyncio); the sockets allow a probe its reconnect.
        client = async_redis(url, socket_timeout=_PROBE_S, socket_connect_timeout=_PROBE_S)
        return cls(client, **kwargs)  # type: ignore[arg-type]

    async def admit(self, key: ClientKey) -> None:
        if key.requests_per_minute is None and key.tokens_per_minute is None:
            return
        if not self.shared:
            return self._alone(key)
        reply = await self._call(key, take=True)
        if reply is None:
            return self._alone(key)
        kind, wait = reply
        if kind:
            raise refusal(key, kind, wait)

    def charge(self, key: ClientKey, tokens: int) -> None:
        if key.tokens_per_minute is None or tokens <= 0:
            return
        if not self.shared:
            self.fallback.charge(key, tokens)
            return
        _, owed = self._owed.get(key.name, (key, 0))
        self._owed[key.name] = (key, owed + tokens)

    async def flush(self) -> None:
        """Settle the tokens charged to keys that have not been admitted since."""
        for name in list(self._owed):
            key, _ = self._owed[name]
            if self.shared:
                await self._call(key, take=False)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_s)
            await self.flush()

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self.flush()
        await self.client.aclose()

    async def _call(self, key: ClientKey, *, take: bool) -> tuple[str, float] | None:
        """The script's verdict, or None when Redis did not answer (now in fallback)."""
        _, owed = self._owed.pop(key.name, (key, 0))
        args = [key.requests_per_minute or 0, key.tokens_per_minute or 0, owed, int(take)]
        try:
            kind, wait = await asyncio.wait_for(
                self._script(keys=[bucket_key(key.name)], args=args), self.timeout_s
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self.fallback.charge(key, owed)  # spent all the same: the fallback counts it
            self._went_down(exc, key)
            return None
        text = kind.decode() if isinstance(kind, bytes) else str(kind)
        return text, float(wait)

    def _went_down(self, exc: BaseException, key: ClientKey) -> None:
        if self.shared:
            logger.warning(
                "shared rate limits: Redis unreachable (%s: %s); this replica limits alone at "
                "1/%d of each limit, retrying every %.1f s",
                type(exc).__name__,
                exc,
                self.fallback.share,
                self.retry_s,
            )
        self.shared = False
        if self._probe is None:
            self._probe = asyncio.ensure_future(self._until_redis_answers(key))

    async def _until_redis_answers(self, key: ClientKey) -> None:
        """Probe the bucket that failed (its node, on a cluster) with a call that changes no
        allowance, every ``retry_s``; then the limits are shared again."""
        try:
            while True:
                await asyncio.sleep(self.retry_s)
                try:
                    if isinstance(self.client, RedisCluster):  # a failover moves slots
                        await asyncio.wait_for(self.client.nodes_manager.initialize(), _PROBE_S)
                    probe = self._script(keys=[bucket_key(key.name)], args=[0, 0, 0, 0])
                    await asyncio.wait_for(probe, _PROBE_S)
                except (RedisError, OSError, TimeoutError):
                    continue
                logger.warning("shared rate limits: Redis answers again; limits are fleet-wide")
                self.shared = True
                return
        finally:
            self._probe = None

    def _alone(self, key: ClientKey) -> None:
        if self.on_fallback is not None:
            self.on_fallback()
        self.fallback.check(key)
