"""A candidate on trial, in a real gateway process under load: as a canary it serves its
share of requests (and says so in ``x-distillgate-student``), in shadow it answers off the
request path and its records reach the Redis stream with its version; every stage change
is followed within seconds, with no failed request."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from gateway.jobs.export import stream_records
from gateway.loop.lifecycle import State, TrialState
from gateway.loop.notify import publish_serving
from gateway.loop.registry import Registry
from gateway.tasks import load_tasks
from tests.conftest import TinyStudent
from tests.loop_fleet import add_version, loop_gateways, loop_task, promote, stop
from tests.redis_server import RedisServer
from tests.traffic import Traffic


def wait_for(url: str, trial: str | None, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (model,) = httpx.get(f"{url}/v1/models").json()["data"]
        if model["trial"] == trial:
            return
        time.sleep(0.1)
    raise AssertionError(f"the gateway did not follow the trial to {trial!r}")


def test_a_canary_serves_its_share_and_a_shadow_is_captured_beside_live_traffic(
    tmp_path: Path, redis_server: RedisServer, tiny_student: TinyStudent
) -> None:
    registry = Registry(tmp_path / "registry", "banking77")
    v1 = add_version(registry, tiny_student.path)
    v2 = add_version(registry, tiny_student.path)
    promote(registry, v1)
    tasks = loop_task(
        tmp_path,
        loop="canary_steps = [0.5]\n",
        teacher=tiny_student,
        extra="[capture]\naudit_rate = 0.0\n",
    )
    procs, (url,) = loop_gateways(tmp_path, redis_server, 1, poll_s=5)
    prompts = [e.prompt or "" for e in tiny_student.test]

    def stage(traffic: Traffic, trial: TrialState) -> list[str]:
        """Move v2 on to ``trial``'s stage as the lifecycle does (its gate, then a stage that
        held), wait until the gateway serves it, then what answered the requests sent since."""
        if trial.stage == State.SHADOW:
            registry.pass_gate(trial.version, trial, "passed", {})
        else:
            current = registry.trial()
            assert current is not None
            registry.stage_held(current, trial, "held", {})
        asyncio.run(publish_serving(redis_server.url, "banking77"))
        wait_for(url, f"{trial.version} {trial.stage} {trial.share:g}")
        since = time.monotonic()
        time.sleep(3)
        return traffic.answered_since(url, since)

    try:
        with Traffic([url], prompts) as traffic:
            traffic.wait_for_answers()
            shadowed = stage(traffic, TrialState(v2, State.SHADOW, 1.0, 0, time.time()))
            canary = stage(traffic, TrialState(v2, State.CANARY, 0.5, 0, time.time()))
            current = registry.trial()
            assert current is not None
            registry.stage_held(current, None, "held", {})
            asyncio.run(publish_serving(redis_server.url, "banking77"))
            wait_for(url, None)
            time.sleep(1)
    finally:
        stop(procs)
    print({"canary": {v: canary.count(v) for v in (v1, v2)}, "shadowed": len(shadowed)})
    assert traffic.failures == []
    assert len(canary) > 40 and 0.3 < canary.count(v2) / len(canary) < 0.7
    assert set(shadowed) == {v1}  # a shadow is never served
    assert traffic.seen[url][-1] == v2
    (task,) = load_tasks(tasks).values()
    records = list(stream_records(redis_server.client(), task))
    shadows = [r for r in records if r.route == "shadow"]
    assert len(shadows) >= 0.8 * len(shadowed) and {r.student_version for r in shadows} == {v2}
    assert all(r.teacher_answer for r in shadows)
    assert {r.reason for r in shadows} <= {"confident", "low_confidence", "invalid_answer"}
