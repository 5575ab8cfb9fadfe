"""Redis clients from one URL: a single server, or a Redis Cluster.

``redis+cluster://host:port`` (``rediss+cluster://`` with TLS) selects redis-py's cluster
client; the node named is only where discovery starts. ``DISTILLGATE_REDIS_CLUSTER=true``
does the same for a plain URL (``Settings.redis_target`` folds it into the URL, so child
processes and commands see one string). Every key distillgate writes carries a hash tag (a
task's or a client key's), so each script's keys share a slot and run unchanged on a cluster.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

__all__ = ["AsyncRedis", "SyncRedis", "async_redis", "cluster_url", "is_cluster", "sync_redis"]

AsyncRedis = aioredis.Redis | AsyncRedisCluster
SyncRedis = redis.Redis | RedisCluster

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# Options of a single server's client the cluster client does not take (it retries itself).
_SINGLE_ONLY = ("retry_on_timeout",)


def is_cluster(url: str) -> bool:
    return url.partition("://")[0] in _CLUSTER_SCHEMES


def cluster_url(url: str) -> str:
    """``url`` naming a cluster (unchanged if it already does)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme in _CLUSTER_SCHEMES:
        return url
    return f"{scheme}+cluster://{rest}"


def _for_cluster(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The plain URL redis-py's cluster client parses, and the options it takes."""
    scheme, _, rest = url.partition("://")
    kept = {k: v for k, v in options.items() if k not in _SINGLE_ONLY}
    return f"{_CLUSTER_SCHEMES[scheme]}://{rest}", kept


def async_redis(url: str, **options: Any) -> AsyncRedis:
    if is_cluster(url):
        plain, kept = _for_cluster(url, options)
        return AsyncRedisCluster.from_url(plain, **kept)
    return aioredis.Redis.from_url(url, **options)


def sync_redis(url: str, **options: Any) -> SyncRedis:
    if is_cluster(url):
        plain, kept = _for_cluster(url, options)
        return RedisCluster.from_url(plain, **kept)
    return redis.Redis.from_url(url, **options)
