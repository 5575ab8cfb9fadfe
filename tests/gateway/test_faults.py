"""Faults with real processes: clients vanishing mid-request, SIGTERM under load, and what
reaches the logs. (Teacher faults: test_escalation.py and test_limits.py; Redis killed
under load: test_capture.py; engine failure: test_engine_faults.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from pathlib import Path

import httpx
import openai

from gateway.capture import CaptureRecord
from gateway.capture.redis import default_stream_name
from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import (
    LABELS,
    Gateway,
    free_port,
    serve_in_thread,
    serve_process,
    write_teacher_task,
)
from tests.redis_server import RedisServer


def wait_until(check, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_clients_leaving_mid_request_abort_generation_and_leak_no_place(
    tiny_student, run_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # Free text at a high temperature, one request at a time: a queue that takes seconds.
    (tmp_path / "free.toml").write_text(
        f'student = "{tiny_student.path}"\n[generation]\nmax_tokens = 100\ntemperature = 2.0\n'
    )
    gw: Gateway = run_gateway(Settings(tasks_dir=tmp_path, max_batch_size=1, max_waiting=64))
    body = {"model": "free", "prompt": "zq xv", "max_tokens": 100, "stream": True}

    async def leave_early(n: int) -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:

            async def one() -> None:
                async with client.stream("POST", "/v1/completions", json=body) as r:
                    async for _ in r.aiter_bytes():
                        pass

            jobs = [asyncio.create_task(one()) for _ in range(n)]
            # Most accepted and still queued or generating (on a busy machine connections
            # take a while: count them in rather than sleep a fixed time).
            for _ in range(200):
                await asyncio.sleep(0.05)
                if await asyncio.to_thread(gw.metric, "distillgate_engine_queue_depth") >= n - 8:
                    break
            for job in jobs:
                job.cancel()  # the connection closes: the client is gone
            await asyncio.gather(*jobs, return_exceptions=True)

    asyncio.run(leave_early(48))
    assert wait_until(lambda: gw.metric("distillgate_engine_queue_depth") == 0, 5.0)
    gone = gw.metric('distillgate_requests_total{route="none",status="499",task="free"}')
    assert gone >= 24, gone  # noticed and aborted, not generated to the end
    reply = gw.client().completions.create(model="free", prompt="card", max_tokens=3)
    assert reply.choices[0].text is not None  # the engine serves on


def test_sigterm_under_load_finishes_or_refuses_cleanly_and_loses_no_record(
    tiny_student, tmp_path: Path, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    sim = serve_in_thread(create_sim_app(SimulatedAnswers({}, LABELS), latency_s=0.3))
    write_teacher_task(tmp_path, tiny_student.path, sim.url)
    port = free_port()
    proc = serve_process(tmp_path, redis_server, port, env={"DISTILLGATE_SHUTDOWN_GRACE_S": "5"})
    outcomes: list[tuple[str, str]] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        i = 0
        while not stop.is_set():
            i += 1
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="banking77",
                    messages=[{"role": "user", "content": f"worker {worker} request {i}"}],
                    extra_headers={"x-distillgate-force-route": "teacher"},
                )
                outcomes.append(("ok", str(raw.headers["x-request-id"])))
            except openai.APIStatusError as exc:
                outcomes.append((f"status {exc.status_code}", exc.response.text))
            except openai.APIConnectionError:
                outcomes.append(("refused", ""))  # after the listener closed: retry elsewhere
                time.sleep(0.05)

    workers = [threading.Thread(target=load, args=(w,)) for w in range(8)]
    for w in workers:
        w.start()
    try:
        time.sleep(2.0)
        in_flight_before = sum(1 for kind, _ in outcomes if kind == "ok")
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        exited_after = time.monotonic() - signalled
    finally:
        stop.set()
        for w in workers:
            w.join()
        sim.stop()
    assert code in (0, -signal.SIGTERM)
    assert exited_after < 5 + 3, exited_after  # within the grace period, plus start-up slack
    kinds = {kind for kind, _ in outcomes}
    assert kinds <= {"ok", "refused", "status 503"}, kinds  # no 500, nothing half-answered
    answered = [rid for kind, rid in outcomes if kind == "ok"]
    assert len(answered) > in_flight_before  # requests in flight at the signal completed
    entries = redis_server.client().xrange(default_stream_name("banking77"))
    captured = [CaptureRecord.from_json(f["data"]).request_id for _, f in entries]
    assert sorted(captured) == sorted(answered)  # every escalation answered was captured


SECRETS = {
    "client key": "dg-client-Zq8tK2",
    "wrong key": "dg-wrong-Pw4uX9",
    "admin key": "admin-Hh7rM3",
    "teacher key": "sk-ant-teacher-Lm5nB1",
    "prompt": "PROMPT-MARKER-Vc6yT0",
    "teacher answer": "Refund_not_showing_up",
}


def test_no_key_and_no_prompt_reaches_the_logs(
    tiny_student, tmp_path: Path, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    sim_app = create_sim_app(SimulatedAnswers({}, ("Refund_not_showing_up",)))
    sim = serve_in_thread(sim_app)
    write_teacher_task(tmp_path, tiny_student.path, sim.url)
    port, log = free_port(), tmp_path / "gateway.log"
    env = {
        "DISTILLGATE_LOG_LEVEL": "debug",
        "DISTILLGATE_ACCESS_LOG": "true",
        "DISTILLGATE_API_KEYS": f'["{SECRETS["client key"]}"]',
        "DISTILLGATE_ADMIN_KEY": SECRETS["admin key"],
        "TEST_TEACHER_KEY": SECRETS["teacher key"],
    }
    proc = serve_process(tmp_path, redis_server, port, env=env, log=log)
    url = f"http://127.0.0.1:{port}"
    good = openai.OpenAI(base_url=f"{url}/v1", api_key=SECRETS["client key"], max_retries=0)
    messages = [{"role": "user", "content": f"my card {SECRETS['prompt']}"}]
    force = {"x-distillgate-force-route": "teacher"}
    try:
        good.chat.completions.create(model="banking77", messages=messages, extra_headers=force)  # type: ignore[arg-type]
        good.chat.completions.create(model="banking77", messages=messages, stream=True)  # type: ignore[arg-type]
        httpx.post(f"{sim.url}/sim/faults", json={"mode": "500", "count": 3})
        # Another prompt: the first one's teacher answer is in the cache now.
        failing = [{"role": "user", "content": f"my card is late {SECRETS['prompt']}"}]
        good.chat.completions.create(model="banking77", messages=failing, extra_headers=force)  # type: ignore[arg-type]
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key=SECRETS["wrong key"], max_retries=0)
        with contextlib.suppress(openai.AuthenticationError):
            bad.chat.completions.create(model="banking77", messages=messages)  # type: ignore[arg-type]
        invalid = {"model": "banking77", "messages": messages, "temperature": "hot"}
        auth = {"authorization": f"Bearer {SECRETS['client key']}"}
        assert (
            httpx.post(f"{url}/v1/chat/completions", json=invalid, headers=auth).status_code == 400
        )
        wrong_admin = {"authorization": f"Bearer {SECRETS['wrong key']}"}
        assert httpx.post(f"{url}/admin/reload", headers=wrong_admin).status_code == 401
        admin = {"authorization": f"Bearer {SECRETS['admin key']}"}
        assert httpx.get(f"{url}/admin/status", headers=admin).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        sim.stop()
    text = log.read_text(errors="replace")
    assert "teacher failed" in text and "POST /v1/chat/completions" in text  # logs were on
    leaked = [what for what, secret in SECRETS.items() if secret in text]
    assert not leaked, leaked
