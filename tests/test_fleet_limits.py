"""Three real gateway processes and one real Redis: a client key's limit holds across the
fleet, and a Redis that stops answering under load refuses nothing it should not, opens no
door, loses no captured record, and is counted."""

from __future__ import annotations

import math
import time
from pathlib import Path

from gateway.capture import CaptureRecord
from gateway.capture.redis import default_stream_name
from tests.fleet import Fleet, drive, wait_until
from tests.redis_server import RedisServer

LIMIT = 30  # requests a minute, for the whole fleet


def allowed(seconds: float) -> int:
    """The stated tolerance: the limit, plus what refills while the burst runs (N/60 a
    second), plus one for a refill landing between two reads."""
    return LIMIT + math.ceil(seconds * LIMIT / 60) + 1


def test_three_gateways_share_one_limit_and_fall_back_when_redis_stops_answering(
    tiny_student, tmp_path: Path, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(tmp_path, redis_server, {"dg-shared": LIMIT, "dg-alone": LIMIT}).start(
        tiny_student.path
    )
    try:
        # 1. Shared: 3 x LIMIT requests at once, round-robin over the three.
        shared = drive(fleet.urls, "dg-shared", 3 * LIMIT)
        assert set(shared.statuses) == {"200", "429 rate_limit_exceeded"}, shared.statuses
        assert LIMIT <= shared.statuses["200"] <= allowed(shared.seconds), shared
        assert fleet.sum("distillgate_rate_limit_fallback_total") == 0

        # 2. Redis stops answering (SIGSTOP: connections hang) while the same load runs.
        redis_server.pause()
        alone = drive(fleet.urls, "dg-alone", 3 * LIMIT)
        assert set(alone.statuses) <= {"200", "429 rate_limit_exceeded"}, alone.statuses
        # Each replica allows LIMIT / 3: near the limit, never three times it.
        assert LIMIT - 3 <= alone.statuses["200"] <= allowed(alone.seconds), alone
        assert fleet.sum("distillgate_rate_limit_fallback_total") >= 3 * LIMIT - 3
        assert fleet.sum("distillgate_rate_limits_shared") == 0
        assert fleet.sum("distillgate_capture_records_total", outcome="spooled") > 0
    finally:
        redis_server.resume()
    try:
        # 3. Redis back: the spools replay; every escalation answered is there exactly once.
        answered = sorted(shared.answered + alone.answered)
        stream = default_stream_name("banking77")
        deadline = time.monotonic() + 60
        while redis_server.client().xlen(stream) < len(answered) and time.monotonic() < deadline:
            time.sleep(0.2)
        entries = redis_server.client().xrange(stream)
        captured = sorted(CaptureRecord.from_json(f["data"]).request_id for _, f in entries)
        assert captured == answered
        # Each replica's probe finds Redis within a retry interval (plus a probe's timeout).
        assert wait_until(lambda: fleet.sum("distillgate_rate_limits_shared") == 3, 10.0)
        again = drive(fleet.urls, "dg-shared", 3)
        assert set(again.statuses) <= {"200", "429 rate_limit_exceeded"}
    finally:
        fleet.stop()
