"""Capture end to end: real gateway, real student, the teacher simulator over real HTTP,
a real redis-server that is killed in the middle of a burst of escalations."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from calibration import student_fingerprint
from gateway.capture import CaptureRecord
from gateway.capture.redis import default_stream_name
from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import LABELS, Gateway, serve_in_thread, write_calibrator, write_task
from tests.redis_server import RedisServer

IN_DOMAIN = "I still have not received my card"
KEY_ENV = "DISTILLGATE_TEST_TEACHER_KEY"
STREAM = default_stream_name("banking77")


@dataclass
class Captured:
    gateway: Gateway
    redis: RedisServer

    def records(self) -> list[CaptureRecord]:
        entries = self.redis.client().xrange(STREAM)
        return [CaptureRecord.from_json(fields["data"]) for _, fields in entries]

    def wait_for(self, n: int, timeout_s: float = 15.0) -> list[CaptureRecord]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                records = self.records()
            except Exception:  # Redis restarting
                records = []
            if len(records) >= n or time.monotonic() > deadline:
                return records
            time.sleep(0.05)


def start(
    tiny_student,
    run_gateway,
    tmp_path: Path,
    redis: RedisServer,
    *,
    capture: str,
    latency_s: float = 0.0,
) -> Captured:  # type: ignore[no-untyped-def]
    sim = serve_in_thread(create_sim_app(SimulatedAnswers({}, LABELS), latency_s=latency_s))
    calibrator = write_calibrator(tmp_path / "tiny.calibration.json", tiny_student.path)
    teacher = (
        f'[teacher]\nprovider = "anthropic"\nmodel = "claude-test"\nbase_url = "{sim.url}"\n'
        f'api_key_env = "{KEY_ENV}"\n'
    )
    write_task(
        tmp_path / "tasks",
        tiny_student.path,
        extra=f'calibrator = "{calibrator}"\n' + teacher + capture,
    )
    settings = Settings(
        tasks_dir=tmp_path / "tasks",
        redis_url=redis.url,
        spool_dir=tmp_path / "spool",
        capture_timeout_s=0.5,
        allow_force_route=True,
    )
    return Captured(run_gateway(settings), redis)


@pytest.fixture
def teacher_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "test-key")


def ask(gw: Gateway, text: str, route: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"x-distillgate-force-route": route} if route else {}
    return gw.client().chat.completions.with_raw_response.create(
        model="banking77", messages=[{"role": "user", "content": text}], extra_headers=headers
    )


def test_an_escalation_is_captured_with_its_context_and_redacted(
    tiny_student, run_gateway, tmp_path: Path, redis_server: RedisServer, teacher_key: None
) -> None:  # type: ignore[no-untyped-def]
    cap = start(
        tiny_student,
        run_gateway,
        tmp_path,
        redis_server,
        capture="[capture]\naudit_rate = 0\nredact = true\n",
    )
    accepted = ask(cap.gateway, IN_DOMAIN)
    assert accepted.headers["x-distillgate-route"] == "student"
    raw = ask(cap.gateway, "zxqv blorf, write to me at jane@example.com", route="teacher")
    assert raw.headers["x-distillgate-route"] == "teacher"
    (record,) = cap.wait_for(1)
    assert cap.records() == [record]  # the accepted request left no record
    assert record.request_id == raw.headers["x-request-id"]
    assert record.route == "teacher" and record.reason == "forced"
    assert record.messages == ({"role": "user", "content": "zxqv blorf, write to me at [EMAIL]"},)
    assert record.redacted == ("EMAIL",)
    assert record.teacher_answer == raw.parse().choices[0].message.content
    assert record.teacher_model == "claude-test" and record.teacher_error is None
    assert record.confidence == pytest.approx(
        float(raw.headers["x-distillgate-confidence"]), abs=1e-4
    )
    assert record.threshold == 0.75 and record.calibrator_version.startswith("cal-")
    assert record.student_fingerprint == student_fingerprint(tiny_student.path)
    assert record.usage["teacher_input_tokens"] > 0 and record.latency_s["teacher"] > 0
    assert cap.gateway.metric("distillgate_capture_records_total") == 1


def test_audits_run_in_the_background_and_feed_live_agreement(
    tiny_student, run_gateway, tmp_path: Path, redis_server: RedisServer, teacher_key: None
) -> None:  # type: ignore[no-untyped-def]
    cap = start(
        tiny_student,
        run_gateway,
        tmp_path,
        redis_server,
        capture="[capture]\naudit_rate = 1.0\n",
        latency_s=1.0,
    )
    started = time.monotonic()
    raw = ask(cap.gateway, IN_DOMAIN)
    assert raw.headers["x-distillgate-route"] == "student"
    assert time.monotonic() - started < 1.0  # the 1 s teacher call did not delay the client
    assert cap.records() == []  # ...it was still running when the answer arrived
    (record,) = cap.wait_for(1)
    assert record.route == "audit" and record.reason == "audit"
    assert record.student_answer == raw.parse().choices[0].message.content
    model = httpx.get(f"{cap.gateway.url}/v1/models").json()["data"][0]
    assert model["audit"]["n"] == 1
    agreed = record.teacher_answer == record.student_answer
    assert model["audit"]["agreement"] == (1.0 if agreed else 0.0)
    assert cap.gateway.metric("distillgate_audits_total") == 1


def test_redis_killed_during_a_burst_loses_and_duplicates_nothing(
    tiny_student, run_gateway, tmp_path: Path, redis_server: RedisServer, teacher_key: None
) -> None:  # type: ignore[no-untyped-def]
    cap = start(
        tiny_student, run_gateway, tmp_path, redis_server, capture="[capture]\naudit_rate = 0\n"
    )
    n, done = 90, []
    lock = threading.Lock()

    def one(i: int) -> str:
        raw = ask(cap.gateway, f"request number {i}", route="teacher")
        assert raw.headers["x-distillgate-route"] == "teacher"
        with lock:
            done.append(i)
            if len(done) == 20:
                redis_server.kill()  # mid-burst: later escalations (and some in flight) spool
            if len(done) == 60:
                redis_server.start()  # back: the spool replays while requests keep coming
        return str(raw.headers["x-request-id"])

    with ThreadPoolExecutor(8) as pool:
        request_ids = list(pool.map(one, range(n)))

    records = cap.wait_for(n)
    got = [r.request_id for r in records]
    assert len(got) == n, f"{n - len(set(got))} lost"
    assert sorted(got) == sorted(request_ids)  # exactly one record per escalated request
    assert (
        cap.gateway.metric('distillgate_capture_records_total{outcome="spooled",task="banking77"}')
        > 0
    )
    assert cap.gateway.metric("distillgate_capture_redis_errors_total") > 0
    assert (
        cap.gateway.metric('distillgate_capture_records_total{outcome="dropped",task="banking77"}')
        == 0
    )


def test_a_stalled_redis_never_holds_a_client(
    tiny_student, run_gateway, tmp_path: Path, redis_server: RedisServer, teacher_key: None
) -> None:  # type: ignore[no-untyped-def]
    cap = start(tiny_student, run_gateway, tmp_path, redis_server, capture="")
    stall = threading.Thread(
        target=lambda: redis_server.client().execute_command("DEBUG", "SLEEP", "3")
    )
    stall.start()
    time.sleep(0.2)
    started = time.monotonic()
    raw = ask(cap.gateway, "escalated while Redis sleeps", route="teacher")
    assert time.monotonic() - started < 2.0  # Redis is frozen for 3 s; the client is not
    assert raw.headers["x-distillgate-route"] == "teacher"
    stall.join()
    (record,) = cap.wait_for(1)
    assert record.request_id == raw.headers["x-request-id"]
    time.sleep(1.5)  # a retry or replay must not add a second copy
    assert len(cap.records()) == 1
