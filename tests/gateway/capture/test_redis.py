"""The Redis sink against a real redis-server: idempotent ids, trimming, failures mapped."""

from __future__ import annotations

import asyncio

import pytest

from gateway.capture import CaptureRecord
from gateway.capture.redis import RedisCaptureSink, default_stream_name
from gateway.errors import CaptureError
from tests.gateway.capture.records import record
from tests.redis_server import RedisServer

STREAM = default_stream_name("banking77")


def test_each_record_id_is_written_once(redis_server: RedisServer) -> None:
    async def run() -> tuple[int, int]:
        sink = RedisCaptureSink.from_url(redis_server.url)
        batch = [record(i) for i in range(5)]
        first = await sink.write(batch)
        again = await sink.write([*batch[2:], record(5)])  # a replay overlapping the first
        await sink.aclose()
        return first, again

    assert asyncio.run(run()) == (5, 1)
    entries = redis_server.client().xrange(STREAM)
    assert [CaptureRecord.from_json(f["data"]).request_id for _, f in entries] == [
        f"req-{i}" for i in range(6)
    ]
    assert {f["route"] for _, f in entries} == {"teacher"} and entries[0][1]["v"] == "1"


def test_streams_are_per_task_and_trimmed(redis_server: RedisServer) -> None:
    async def run() -> None:
        sink = RedisCaptureSink.from_url(redis_server.url, maxlen=lambda _t: 1000)
        for start in range(0, 3000, 500):
            await sink.write([record(i) for i in range(start, start + 500)])
        await sink.write([record(0, task="other")])
        await sink.aclose()

    asyncio.run(run())
    client = redis_server.client()
    assert 1000 <= client.xlen(STREAM) < 3000  # approximate trimming: ~1000, never unbounded
    assert client.xlen(default_stream_name("other")) == 1


def test_an_unreachable_redis_raises_capture_error(redis_server: RedisServer) -> None:
    redis_server.kill()

    async def run() -> None:
        sink = RedisCaptureSink.from_url(redis_server.url, timeout_s=0.5)
        try:
            await sink.write([record(1)])
        finally:
            await sink.aclose()

    with pytest.raises(CaptureError):
        asyncio.run(run())
