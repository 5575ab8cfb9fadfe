"""The loop's view of the capture history, against a real redis-server and spool files:
each call reads only what is new, and what was read stays known."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.capture import Spool
from gateway.capture.redis import RedisCaptureSink
from gateway.jobs.export import stream_name
from gateway.loop.source import CaptureHistory
from gateway.tasks import Task
from tests.gateway.loop.helpers import captured
from tests.redis_server import RedisServer


def test_history_reads_only_what_is_new_and_keeps_what_it_read(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    task = Task(name="banking77", student=tmp_path / "s")
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    history = CaptureHistory(redis_server.url, spools=[spool_dir])

    async def write(n: int, prefix: str) -> None:
        sink = RedisCaptureSink.from_url(redis_server.url)
        try:
            await sink.write([captured(f"{prefix}{i}", "card_arrival", at=i) for i in range(n)])
        finally:
            await sink.aclose()

    asyncio.run(write(1500, "a"))  # more than one XRANGE page
    spool.append([captured("spooled", "card_arrival")])
    assert len(history.records(task)) == 1501
    asyncio.run(write(10, "b"))
    assert len(history.records(task)) == 1511
    # Whatever Redis trims, and a spool segment replayed and deleted, stay known...
    assert redis_server.client().xtrim(stream_name(task), maxlen=0, approximate=False) == 1511 - 1
    for segment in spool_dir.glob("*.jsonl"):
        segment.unlink()
    assert len(history.records(task)) == 1511
    # ...and the next entries are read after the last one seen.
    asyncio.run(write(5, "c"))
    assert len(history.records(task)) == 1516
    # A line still being written is read once it is whole.
    torn = spool_dir / "000000000009.jsonl"
    whole = captured("late", "card_arrival").to_json().encode()
    torn.write_bytes(whole[:-10])
    assert len(history.records(task)) == 1516
    torn.write_bytes(whole + b"\n")
    assert len(history.records(task)) == 1517
