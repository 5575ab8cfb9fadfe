"""SIGTERM on a real ``distillgate serve`` process: in-flight escalations finish, and their
records (Redis being down) are flushed to the spool, which the next process replays."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from gateway.capture import CaptureRecord
from gateway.capture.redis import default_stream_name
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import (
    LABELS,
    free_port,
    serve_in_thread,
    serve_process,
    write_teacher_task,
)
from tests.redis_server import RedisServer


def test_sigterm_flushes_in_flight_records_to_the_spool(
    tiny_student, tmp_path: Path, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    sim = serve_in_thread(create_sim_app(SimulatedAnswers({}, LABELS), latency_s=1.5))
    write_teacher_task(tmp_path, tiny_student.path, sim.url)
    port = free_port()
    proc = serve_process(tmp_path, redis_server, port)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
    redis_server.kill()  # records can only go to the spool now

    def one(i: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="banking77",
            messages=[{"role": "user", "content": f"escalated {i}"}],
            extra_headers={"x-distillgate-force-route": "teacher"},
        )
        assert raw.headers["x-distillgate-route"] == "teacher"
        return str(raw.headers["x-request-id"])

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(one, i) for i in range(6)]
        time.sleep(0.7)  # all six are waiting on the 1.5 s teacher
        proc.send_signal(signal.SIGTERM)
        request_ids = [f.result() for f in futures]  # in-flight requests still complete
    # uvicorn shuts down gracefully, then re-raises the signal: the exit is by SIGTERM
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert list((tmp_path / "spool").glob("*.jsonl")), "nothing was spooled"

    redis_server.start()
    proc = serve_process(tmp_path, redis_server, port)  # the next process replays the spool
    try:
        deadline = time.monotonic() + 15
        while redis_server.client().xlen(default_stream_name("banking77")) < 6:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        entries = redis_server.client().xrange(default_stream_name("banking77"))
        assert sorted(CaptureRecord.from_json(f["data"]).request_id for _, f in entries) == sorted(
            request_ids
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        sim.stop()
