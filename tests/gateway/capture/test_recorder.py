"""The recorder with a real redis-server that dies, stalls and comes back."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from gateway.capture import CaptureRecord, CaptureRecorder, Spool
from gateway.capture.redis import RedisCaptureSink, default_stream_name
from tests.gateway.capture.records import record
from tests.redis_server import RedisServer

STREAM = default_stream_name("banking77")


def stream_ids(server: RedisServer) -> list[str]:
    entries = server.client().xrange(STREAM)
    return [CaptureRecord.from_json(f["data"]).request_id for _, f in entries]


def recorder(
    server: RedisServer, spool_dir: Path, events: list[tuple[str, int]]
) -> CaptureRecorder:
    return CaptureRecorder(
        RedisCaptureSink.from_url(server.url, timeout_s=0.3),
        Spool(spool_dir),
        batch_size=8,
        retry_interval_s=0.1,
        on_event=lambda outcome, _task, n: events.append((outcome, n)),
    )


def total(events: list[tuple[str, int]], outcome: str) -> int:
    return sum(n for o, n in events if o == outcome)


def test_an_outage_spools_then_replays_in_order_without_duplicates(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    events: list[tuple[str, int]] = []

    async def run() -> None:
        rec = recorder(redis_server, tmp_path / "spool", events)
        await rec.start()
        for i in range(40):
            rec.submit(record(i))
        assert await rec.drain(5)
        redis_server.kill()
        for i in range(40, 80):
            rec.submit(record(i))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)
        assert rec.spool.pending  # Redis is down: on disk, not lost
        redis_server.start()
        for i in range(80, 120):  # arriving while the spool replays: they queue behind it
            rec.submit(record(i))
            await asyncio.sleep(0.002)
        assert await rec.drain(10)
        await rec.aclose()

    asyncio.run(run())
    assert stream_ids(redis_server) == [f"req-{i}" for i in range(120)]
    assert total(events, "spooled") >= 40 and total(events, "replayed") == total(events, "spooled")
    assert total(events, "written") + total(events, "spooled") == 120
    assert total(events, "dropped") == 0


def test_a_stalled_redis_does_not_stall_capture(redis_server: RedisServer, tmp_path: Path) -> None:
    events: list[tuple[str, int]] = []
    stall = threading.Thread(
        target=lambda: redis_server.client().execute_command("DEBUG", "SLEEP", "1.5")
    )

    async def run() -> None:
        rec = recorder(redis_server, tmp_path / "spool", events)
        await rec.start()
        stall.start()
        await asyncio.sleep(0.1)
        for i in range(10):
            rec.submit(record(i))
        await asyncio.sleep(0.6)
        assert total(events, "spooled") == 10  # past the 0.3 s timeout: spooled, not waiting
        assert await rec.drain(10)
        await rec.aclose()

    asyncio.run(run())
    stall.join()
    assert stream_ids(redis_server) == [f"req-{i}" for i in range(10)]  # once each, in order


def test_closing_with_redis_down_leaves_everything_in_the_spool(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    events: list[tuple[str, int]] = []
    redis_server.kill()

    async def run() -> None:
        rec = recorder(redis_server, tmp_path / "spool", events)
        await rec.start()
        for i in range(25):
            rec.submit(record(i))
        await rec.aclose()  # graceful shutdown while Redis is unreachable

    asyncio.run(run())
    assert total(events, "spooled") == 25
    redis_server.start()

    async def next_process() -> None:  # a restarted gateway finds the spool and replays it
        rec = recorder(redis_server, tmp_path / "spool", events)
        await rec.start()
        assert await rec.drain(10)
        await rec.aclose()

    asyncio.run(next_process())
    assert stream_ids(redis_server) == [f"req-{i}" for i in range(25)]
