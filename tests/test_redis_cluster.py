"""A real Redis Cluster (three primaries, three replicas, ``redis-server`` processes): capture
under load while the primary holding the task's stream is killed and its replica promoted;
every escalated request's record lands exactly once, and export and the shared limits keep
working on the new primary."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.capture import CaptureRecord
from gateway.capture.redis import default_stream_name
from gateway.limits.redis import bucket_key
from tests.conftest import cli
from tests.fleet import Fleet, drive, wait_until
from tests.redis_cluster import RedisClusterServers

STREAM = default_stream_name("banking77")
LIMIT = 20


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path / "cluster")
    cluster.start()
    yield cluster
    cluster.stop()


def test_a_primary_killed_mid_burst_loses_and_duplicates_no_record(
    tiny_student, tmp_path: Path, redis_cluster: RedisClusterServers
) -> None:  # type: ignore[no-untyped-def]
    victim = redis_cluster.primary_of(STREAM)
    # A limited key whose buckets live on the same primary, so the limits fail over too.
    on_victim = [
        f"dg-limited-{i}"
        for i in range(1000)
        if redis_cluster.primary_of(bucket_key(f"dg-limited-{i}")) == victim
    ]
    limited, warm = on_victim[0], on_victim[1]
    fleet = Fleet(
        tmp_path,
        redis_cluster,
        {"dg-burst": 100_000, warm: 100_000, limited: LIMIT},
        n=2,
        env={"DISTILLGATE_CAPTURE_REPLICA_ACKS": "1"},
    ).start(tiny_student.path)
    try:
        burst = drive(fleet.urls, "dg-burst", 240, at=60, during=lambda: redis_cluster.kill(victim))
        assert set(burst.statuses) == {"200"}, burst.statuses  # the failover reached no client
        promoted = redis_cluster.wait_promoted(victim, STREAM)
        assert promoted != victim

        deadline = time.monotonic() + 60
        client = redis_cluster.client()
        while client.xlen(STREAM) < len(burst.answered) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # anything still in a spool would show up as a duplicate now
        entries = client.xrange(STREAM)
        captured = [CaptureRecord.from_json(f["data"]).request_id for _, f in entries]
        assert len(captured) == len(set(captured))  # exactly once
        assert sorted(captured) == sorted(burst.answered)  # every one
        assert fleet.sum("distillgate_capture_records_total", outcome="spooled") > 0

        # Export reads the stream on the promoted primary through a consumer group.
        out = tmp_path / "pairs.jsonl"
        os.environ["DISTILLGATE_REDIS_URL"] = redis_cluster.url
        try:
            done = cli("export", "--task", "banking77", "--out", str(out), cwd=tmp_path,
                       tasks=tmp_path / "tasks")  # fmt: skip
        finally:
            os.environ["DISTILLGATE_REDIS_URL"] = ""
        assert done.returncode == 0, done.stderr
        exported = [json.loads(line) for line in out.read_text().splitlines()]
        n = len(burst.answered)
        report = re.search(
            r"read (\d+) captured records; kept (\d+) .* held out (\d+)", done.stdout + done.stderr
        )
        assert report is not None, done.stdout + done.stderr
        read, kept, held_out = map(int, report.groups())
        assert (read, kept + held_out, len(exported)) == (n, n, kept)  # none dropped

        # The shared limits, whose buckets failed over with the stream, hold the limit again.
        # The first admission on a moved slot may find the dead node and decide alone until the
        # replica's probe finds the new primary: a warm-up key on the same node, then wait.
        drive(fleet.urls, warm, 8)
        assert wait_until(lambda: fleet.sum("distillgate_rate_limits_shared") == 2, 15.0)
        limits = drive(fleet.urls, limited, 2 * LIMIT)
        assert set(limits.statuses) <= {"200", "429 rate_limit_exceeded"}
        assert LIMIT <= limits.statuses["200"] <= LIMIT + 2 + limits.seconds * LIMIT / 60
        assert fleet.sum("distillgate_rate_limits_shared") == 2
    finally:
        fleet.stop()
