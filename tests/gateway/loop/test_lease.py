"""The loop's lease against a real redis-server: one worker per task across hosts (no
shared folder), and still one when Redis goes away mid-round."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

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
        async with Lease(url, here, "banking77").take() as first:
            seen.append(first)
            assert redis_server.client().get(lease_key("banking77")) is not None
            async with Lease(url, there, "banking77").take() as other_host:
                seen.append(other_host)  # refused by Redis, though its file lock is free
            redis_server.kill()  # mid-round
            async with Lease(url, here, "banking77").take() as same_host:
                seen.append(same_host)  # Redis gone: the file lock still excludes it
        async with Lease(url, here, "banking77").take() as after:
            seen.append(after)  # released: the file lock alone, while Redis is down
        redis_server.start()  # its append-only file kept the key it could not release
        async with Lease(url, there, "banking77").take() as back:
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
        async with Lease(None, banking, "banking77", turns=True).take() as first:
            seen.append(first)
            async with Lease(None, snips, "snips", turns=True).take() as waits:
                seen.append(waits)  # its own lease is free, the registry's turn is not
            async with Lease(None, snips, "snips").take() as without_turns:
                seen.append(without_turns)
            async with Lease(None, elsewhere, "snips", turns=True).take() as own_root:
                seen.append(own_root)
        async with Lease(None, snips, "snips", turns=True).take() as after:
            seen.append(after)
        return seen

    assert asyncio.run(scenario()) == [True, False, True, True, True]


def test_turns_go_to_the_task_that_waited_longest_since_its_last_round(tmp_path: Path) -> None:
    """Two tasks that never ran: the higher priority goes first, whoever asked first; then
    the other, though the first is due again at once (no task trains twice in a row while
    another waits). A waiting task's marker that is not refreshed is a worker gone."""
    banking = Lease(None, Registry(tmp_path, "banking77"), "banking77", turns=True, priority=1)
    snips = Lease(None, Registry(tmp_path, "snips"), "snips", turns=True)

    async def held(lease: Lease, last_round_at: float = 0.0) -> bool:
        async with lease.take(last_round_at) as holds:
            return holds

    async def scenario() -> list[bool]:
        other = Lease(None, Registry(tmp_path, "other"), "other", turns=True)
        async with other.take() as running:  # a third task's round runs
            seen = [running, await held(banking)]  # banking77 now waits for its turn
        seen.append(await held(snips))  # it ran nothing yet either, and banking77 ranks higher
        assert "banking77" in snips.why
        seen.append(await held(banking))
        seen.append(await held(banking, last_round_at=time.time()))  # snips waits, never ran
        seen.append(await held(snips))
        return seen

    assert asyncio.run(scenario()) == [True, False, False, True, False, True]

    marker = tmp_path / ".turns" / "gone.json"
    marker.write_text('{"priority": 9, "last_round_at": 0, "since": 0}')
    assert not asyncio.run(held(snips))  # a fresh marker of a higher priority waits first
    old = time.time() - 3600
    os.utime(marker, (old, old))
    assert asyncio.run(held(snips))  # not refreshed for three polls: a worker gone


def test_tasks_started_together_all_ask_before_one_takes_its_turn(tmp_path: Path) -> None:
    settle = Lease(None, Registry(tmp_path, "snips"), "snips", turns=True, settle_s=0.2)
    first = Lease(None, Registry(tmp_path, "banking77"), "banking77", turns=True, priority=1)

    async def scenario() -> list[bool]:
        seen = []
        async with settle.take() as held:
            seen.append(held)  # asked, and waits a moment for others to ask too
        await asyncio.sleep(0.1)
        async with first.take() as held:
            seen.append(held)  # within the moment: the higher priority goes first
        await asyncio.sleep(0.2)
        async with settle.take() as held:
            seen.append(held)
        return seen

    assert asyncio.run(scenario()) == [False, True, True]


def test_redis_unreachable_is_logged_once_when_it_begins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lease = Lease("redis://127.0.0.1:1/0", Registry(tmp_path, "banking77"), "banking77")

    async def rounds() -> list[bool]:
        seen = []
        for _ in range(3):
            async with lease.take() as held:
                seen.append(held)
        return seen

    with caplog.at_level(logging.INFO, logger="gateway.loop.lease"):
        assert asyncio.run(rounds()) == [True, True, True]  # by the file lock
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert said == ["task banking77: Redis unreachable; leasing by file lock"]
