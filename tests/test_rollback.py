"""A bad version forced into service is rolled back by its audits, with nobody acting: a
real gateway process serves it, the teacher audits what it accepts, the records reach the
Redis stream, the loop worker's sequential test sees the agreement fall, restores the
version before it and marks this one bad; the gateway switches back by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from gateway.examples import Example
from gateway.jobs.export import stream_records
from gateway.loop.registry import Registry
from gateway.loop.source import CaptureHistory
from gateway.loop.worker import LoopWorker
from gateway.tasks import load_tasks
from gateway.training.trainer import train_student
from tests.conftest import (
    TINY,
    TinyStudent,
    write_calibrator,
)
from tests.loop_fleet import add_version, loop_gateways, loop_task, promote, stop
from tests.redis_server import RedisServer


def test_a_bad_version_forced_into_service_is_rolled_back_by_its_audits(
    tmp_path: Path, redis_server: RedisServer, tiny_student: TinyStudent
) -> None:
    registry = Registry(tmp_path / "registry", "banking77")
    good = add_version(registry, tiny_student.path)
    promote(registry, good)
    # A bad student: the tiny recipe on labels moved one place along (every answer wrong),
    # forced into service by hand with a calibrator that accepts all it says.
    labels = sorted({e.answer for e in tiny_student.train})
    moved = {a: labels[(i + 1) % len(labels)] for i, a in enumerate(labels)}
    wrong = [Example(answer=moved[e.answer], prompt=e.prompt) for e in tiny_student.train]
    train_student(wrong, wrong[:20], tmp_path / "wrong", TINY)
    bad = add_version(registry, tmp_path / "wrong")
    write_calibrator(registry.calibrator(bad), registry.student_dir(bad), threshold=0.0)
    promote(registry, bad)
    tasks = loop_task(
        tmp_path,
        loop="min_pairs = 100000\nmin_new_pairs = 100000\n",
        teacher=tiny_student,
        extra="[routing]\ntarget_accuracy = 0.97\n[capture]\naudit_rate = 1.0\n",
    )
    procs, (url,) = loop_gateways(tmp_path, redis_server, 1, poll_s=1)
    (task,) = load_tasks(tasks).values()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:

            def ask(prompt: str) -> str:
                body = {"model": "banking77", "messages": [{"role": "user", "content": prompt}]}
                r = client.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                return r.headers["x-distillgate-student"]

            served = [ask(e.prompt or "") for e in tiny_student.test * 2]
            assert set(served) == {bad}
            deadline = time.monotonic() + 30
            while True:  # the audits run in the background
                records = list(stream_records(redis_server.client(), task))
                audits = [r for r in records if r.route == "audit" and r.student_version == bad]
                if len(audits) >= len(served) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            agreement = sum(r.student_answer == r.teacher_answer for r in audits) / len(audits)
            worker = LoopWorker(task, CaptureHistory(redis_server.url), redis_url=redis_server.url)
            report = asyncio.run(worker.step())
            # The rollback makes a round due; too few pairs here to run one.
            assert report is not None and (report.trigger, report.outcome) == (
                "rollback",
                "skipped",
            )
            serving = registry.serving()
            assert serving is not None and serving.version == good
            version = registry.version(bad)
            assert version.state == "bad" and "SPRT" in version.reason
            deadline = time.monotonic() + 15
            while ask(tiny_student.test[0].prompt or "") != good:
                assert time.monotonic() < deadline, "the gateway did not switch back"
                time.sleep(0.2)
    finally:
        stop(procs)
    print({"audits": len(audits), "agreement": round(agreement, 3), "reason": version.reason})
