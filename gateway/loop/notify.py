"""Tell every replica that a task's serving version changed.

A Redis pub/sub message on ``distillgate:{<task>}:serving`` wakes each gateway's registry
watcher at once; the watcher also polls the registry, so a replica that missed the message
(Redis down, a reconnect) converges on its next poll. The message carries no version:
the registry's pointer is the only truth, so a stale or duplicated message is harmless.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from gateway.redis_clients import async_redis

__all__ = ["channel", "publish_serving"]

logger = logging.getLogger(__name__)


def channel(task: str) -> str:
    return f"distillgate:{{{task}}}:serving"


async def publish_serving(redis_url: str | None, task: str) -> None:
    if not redis_url:
        return
    client = async_redis(redis_url, socket_timeout=5)
    try:
        await client.publish(channel(task), "changed")
    except RedisError as exc:
        logger.warning("task %s: could not announce the new version (%s); replicas poll", task, exc)
    finally:
        await client.aclose()
