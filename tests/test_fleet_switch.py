"""Three real gateway processes follow one registry: a version promoted while they are
under load is served by every one of them within seconds, and no request fails."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from gateway.loop.notify import publish_serving
from gateway.loop.registry import Registry
from tests.conftest import TinyStudent
from tests.loop_fleet import add_version, loop_gateways, loop_task, promote, stop
from tests.redis_server import RedisServer
from tests.traffic import Traffic


def test_three_gateways_switch_to_a_promoted_version_under_load(
    tmp_path: Path, redis_server: RedisServer, tiny_student: TinyStudent
) -> None:
    registry = Registry(tmp_path / "registry", "banking77")
    v1 = add_version(registry, tiny_student.path)
    promote(registry, v1)
    loop_task(tmp_path)
    procs, urls = loop_gateways(tmp_path, redis_server, 3, poll_s=5)
    prompts = [e.prompt or "" for e in tiny_student.test]
    try:
        with Traffic(urls, prompts) as traffic:
            traffic.wait_for_answers()
            assert all(set(traffic.seen[url]) == {v1} for url in urls)
            v2 = add_version(registry, tiny_student.path)
            promote(registry, v2)
            asyncio.run(publish_serving(redis_server.url, "banking77"))
            promoted = time.monotonic()
            switched: dict[str, float] = {}
            while len(switched) < 3 and time.monotonic() - promoted < 30:
                for url in urls:
                    if url not in switched:
                        (model,) = httpx.get(f"{url}/v1/models").json()["data"]
                        if model["student_version"] == v2:
                            switched[url] = time.monotonic() - promoted
                time.sleep(0.1)
            time.sleep(2)  # traffic on the new version too
    finally:
        stop(procs)
    seen = {url: set(versions) for url, versions in traffic.seen.items()}
    print({"switch_seconds": switched, "versions_seen": {u: sorted(v) for u, v in seen.items()}})
    assert traffic.failures == []
    assert len(switched) == 3 and max(switched.values()) < 4  # the message, not the 5 s poll
    assert all(seen[url] == {v1, v2} for url in urls)


def test_with_redis_down_a_promotion_still_reaches_every_replica_and_messages_resume(
    tmp_path: Path, redis_server: RedisServer, tiny_student: TinyStudent
) -> None:
    """The registry pointer is the one truth; Redis only hurries replicas. With Redis
    killed, a promotion reaches both replicas by their poll (each serves the old version or
    the new one whole, never a failed request); once Redis is back, the next promotion
    reaches them by the message again, well before a poll."""
    poll_s = 8.0
    registry = Registry(tmp_path / "registry", "banking77")
    v1 = add_version(registry, tiny_student.path)
    promote(registry, v1)
    loop_task(tmp_path)
    procs, urls = loop_gateways(tmp_path, redis_server, 2, poll_s=poll_s)

    def promote_and_time(version: str) -> dict[str, float]:
        promote(registry, version)
        asyncio.run(publish_serving(redis_server.url, "banking77"))  # fails quietly if down
        promoted = time.monotonic()
        switched: dict[str, float] = {}
        while len(switched) < len(urls) and time.monotonic() - promoted < 3 * poll_s:
            for url in urls:
                (model,) = httpx.get(f"{url}/v1/models").json()["data"]
                if url not in switched and model["student_version"] == version:
                    switched[url] = time.monotonic() - promoted
            time.sleep(0.1)
        return switched

    prompts = [e.prompt or "" for e in tiny_student.test]
    try:
        with Traffic(urls, prompts) as traffic:
            traffic.wait_for_answers()
            redis_server.kill()
            v2 = add_version(registry, tiny_student.path)
            by_poll = promote_and_time(v2)
            redis_server.start()
            time.sleep(poll_s + 2)  # the listeners resubscribe
            v3 = add_version(registry, tiny_student.path)
            by_message = promote_and_time(v3)
            time.sleep(1)
    finally:
        stop(procs)
    print({"redis_down_switch_s": by_poll, "redis_back_switch_s": by_message})
    assert traffic.failures == []
    assert len(by_poll) == 2 and max(by_poll.values()) < poll_s + 4
    assert len(by_message) == 2 and max(by_message.values()) < 3.0
    for url in urls:
        assert set(traffic.seen[url]) == {v1, v2, v3}
        for served in traffic.sequences[url]:
            # A client's requests moved forward once per promotion: never back, never mixed.
            changes = [v for i, v in enumerate(served) if i == 0 or served[i - 1] != v]
            assert changes == [v1, v2, v3]
