"""The loop's lease against a real redis-server: one worker per task across hosts (no
shared folder), and still one when Redis goes away mid-round."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.loop.lease import Lease, lease_key
from gateway.loop.registry import Registry
from tests.redis_server import RedisServer


def test_one_worker_per_task_across_hosts_and_through_a_redis_outage(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url
    here = Registry(tmp_path / "host-a", "banking77")
    there = Registry(tmp_path / "host-b", "banking77")  # another host: its own file lock

    async def scenario() -> list[bool]:
        seen = []
        async with Lease.take(url, here, "banking77") as first:
            seen.append(first)
            assert redis_server.client().get(lease_key("banking77")) is not None
            async with Lease.take(url, there, "banking77") as other_host:
                seen.append(other_host)  # refused by Redis, though its file lock is free
            redis_server.kill()  # mid-round
            async with Lease.take(url, here, "banking77") as same_host:
                seen.append(same_host)  # Redis gone: the file lock still excludes it
        async with Lease.take(url, here, "banking77") as after:
            seen.append(after)  # released: the file lock alone, while Redis is down
        redis_server.start()  # its append-only file kept the key it could not release
        async with Lease.take(url, there, "banking77") as back:
            seen.append(back)
        return seen

    assert asyncio.run(scenario()) == [True, False, False, True, False]
    ttl = redis_server.client().pttl(lease_key("banking77"))
    assert 0 < ttl <= 60_000  # an unreleased lease expires by itself
