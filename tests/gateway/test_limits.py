"""Per-task limits refuse one request with a clear OpenAI error, instead of degrading all:
message count, input size, prompt tokens, body size, the overall deadline, and the bound on
what an engine holds."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from pathlib import Path

import httpx
import openai
import pytest

from gateway.engines.admission import GatedEngine
from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.engines.transformers import TransformersEngine
from gateway.errors import Overloaded
from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import LABELS, Gateway, serve_in_thread, write_calibrator, write_task

KEY_ENV = "DISTILLGATE_TEST_TEACHER_KEY"
LIMITS = "[limits]\nmax_messages = 3\nmax_input_chars = 200\nmax_prompt_tokens = 40\n"


@pytest.fixture(scope="module")
def limited(tiny_student, run_gateway, tmp_path_factory: pytest.TempPathFactory) -> Gateway:  # type: ignore[no-untyped-def]
    tasks = tmp_path_factory.mktemp("limits")
    write_task(tasks, tiny_student.path, extra='[prompt]\ninput = "conversation"\n' + LIMITS)
    return run_gateway(Settings(tasks_dir=tasks, max_body_bytes=4096))  # type: ignore[no-any-return]


def refusal(gw: Gateway, **body: object) -> openai.APIStatusError:
    payload = {"model": "banking77", "messages": [{"role": "user", "content": "card"}], **body}
    with pytest.raises(openai.APIStatusError) as info:
        gw.client().chat.completions.create(**payload)  # type: ignore[call-overload]
    return info.value


def test_too_many_messages(limited: Gateway) -> None:
    turns = [{"role": "user", "content": "card"}, {"role": "assistant", "content": "x"}] * 2
    error = refusal(limited, messages=turns)
    assert error.status_code == 400 and error.body["code"] == "too_many_messages"  # type: ignore[index]
    assert error.body["param"] == "messages"  # type: ignore[index]


def test_too_much_input_text(limited: Gateway) -> None:
    error = refusal(limited, messages=[{"role": "user", "content": "card " * 50}])
    assert error.status_code == 400 and error.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert "200 characters" in error.body["message"]  # type: ignore[index]


def test_too_many_prompt_tokens(limited: Gateway) -> None:
    turns = [{"role": "user", "content": "my card has not arrived yet " * 2}] * 3
    error = refusal(limited, messages=turns)
    assert error.status_code == 400 and error.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert "at most 40 tokens" in error.body["message"]  # type: ignore[index]


def test_too_large_a_body(limited: Gateway) -> None:
    # A client's max_tokens above the task's is a ceiling, not a refusal: see
    # test_openai_conformance.test_a_limit_above_the_tasks_is_a_ceiling_not_a_refusal.
    r = httpx.post(f"{limited.url}/v1/chat/completions", content=b"{" + b" " * 5000 + b"}")
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_within_the_limits_is_answered(limited: Gateway) -> None:
    reply = limited.client().chat.completions.create(
        model="banking77", messages=[{"role": "user", "content": "my card has not arrived"}]
    )
    assert reply.choices[0].message.content in LABELS


def test_the_deadline_bounds_the_student_and_then_the_teacher(
    tiny_student, run_gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    sim = serve_in_thread(create_sim_app(SimulatedAnswers({}, LABELS), latency_s=5.0))
    monkeypatch.setenv(KEY_ENV, "k")
    calibrator = write_calibrator(tmp_path / "c.json", tiny_student.path)
    # The teacher's own deadline (20 s) is longer than the request's: the request's wins.
    teacher = f'[teacher]\nbase_url = "{sim.url}"\napi_key_env = "{KEY_ENV}"\n'
    common = f'calibrator = "{calibrator}"\n{teacher}'
    write_task(tmp_path, tiny_student.path, "fallback", common + "[limits]\ndeadline_s = 0.5\n")
    write_task(
        tmp_path,
        tiny_student.path,
        "strict",
        common + '[routing]\non_teacher_failure = "error"\n[limits]\ndeadline_s = 0.5\n',
    )
    write_task(tmp_path, tiny_student.path, "instant", "[limits]\ndeadline_s = 1e-9\n")
    gw = run_gateway(Settings(tasks_dir=tmp_path, allow_force_route=True))
    client = gw.client()
    messages = [{"role": "user", "content": "card"}]
    force = {"x-distillgate-force-route": "teacher"}
    try:
        started = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(
            model="fallback",
            messages=messages,  # type: ignore[arg-type]
            extra_headers=force,
        )
        assert raw.headers["x-distillgate-route"] == "student-fallback"
        assert time.monotonic() - started < 2.0
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="strict", messages=messages, extra_headers=force)  # type: ignore[arg-type]
        assert info.value.status_code == 504 and info.value.body["code"] == "teacher_timeout"  # type: ignore[index]
        assert time.monotonic() - started < 2.0
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="instant", messages=messages)  # type: ignore[arg-type]
        assert info.value.status_code == 504 and info.value.body["code"] == "request_timeout"  # type: ignore[index]
        assert gw.metric("distillgate_engine_queue_depth") == 0  # the student was aborted
    finally:
        sim.stop()


def test_a_gated_engine_refuses_past_its_bounds_and_frees_places(tiny_student) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        gated = GatedEngine(TransformersEngine(tiny_student.path), max_running=1, max_waiting=1)
        release = asyncio.Event()

        async def hold(rid: str) -> None:
            req = GenerationRequest(rid, SamplingParams(16), messages=(Message("user", "card"),))
            async with aclosing(gated.generate(req)) as stream:
                async for _ in stream:
                    await release.wait()

        await gated.start()
        try:
            first = asyncio.create_task(hold("a"))
            second = asyncio.create_task(hold("b"))
            while (gated.running, gated.waiting) != (1, 1):
                await asyncio.sleep(0.01)
            with pytest.raises(Overloaded) as info:
                await hold("c")
            assert info.value.status_code == 429 and info.value.headers()["Retry-After"]
            second.cancel()  # a client that leaves while waiting gives its place back
            await asyncio.gather(second, return_exceptions=True)
            assert gated.waiting == 0
            release.set()
            await first
            assert gated.pending == 0
        finally:
            await gated.aclose()

    asyncio.run(scenario())
