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


def test_tasks_sharing_a_registry_take_turns_to_run_rounds(tmp_path: Path) -> None:
    """Two students training at once on a small machine slow both: with turns, a task's
    round waits while another task of the same registry runs one (no Redis: file locks)."""
    banking, snips = Registry(tmp_path, "banking77"), Registry(tmp_path, "snips")
    elsewhere = Registry(tmp_path / "other-root", "snips")

    async def scenario() -> list[bool]:
        seen = []
        async with Lease.take(None, banking, "banking77", turns=True) as first:
            seen.append(first)
            async with Lease.take(None, snips, "snips", turns=True) as waits:
                seen.append(waits)  # its own lease is free, the registry's turn is not
            async with Lease.take(None, snips, "snips") as without_turns:
                seen.append(without_turns)
            async with Lease.take(None, elsewhere, "snips", turns=True) as own_root:
                seen.append(own_root)
        async with Lease.take(None, snips, "snips", turns=True) as after:
            seen.append(after)
        return seen

    assert asyncio.run(scenario()) == [True, False, True, True, True]
