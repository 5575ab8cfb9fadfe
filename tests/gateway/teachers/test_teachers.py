"""Teacher clients against the simulator over real HTTP, through the real SDKs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from gateway.engines.base import Message
from gateway.errors import TeacherError, TeacherTimeout, TeacherUnavailable
from gateway.simulator import SimulatedAnswers, create_sim_app
from gateway.teachers.anthropic import AnthropicTeacher
from gateway.teachers.base import Teacher, TeacherRequest
from gateway.teachers.openai_compat import OpenAICompatTeacher
from gateway.teachers.resilience import CircuitBreaker, ResilientTeacher
from tests.conftest import serve_in_thread

KNOWN = {"where is my card": "card_arrival", "what is the rate": "exchange_rate"}


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    answers = SimulatedAnswers(dict(KNOWN), tuple(sorted(set(KNOWN.values()))))
    served = serve_in_thread(create_sim_app(answers, timeout_s=30))
    yield served.url
    served.stop()


def arm(sim: str, mode: str | None, count: int = 1) -> None:
    httpx.post(f"{sim}/sim/faults", json={"mode": mode, "count": count}).raise_for_status()


def ask(text: str) -> TeacherRequest:
    return TeacherRequest("r1", (Message("user", text),), "Answer with a label.", 16)


def clients(sim: str) -> list[Teacher]:
    return [
        AnthropicTeacher(model="claude-haiku-4-5", api_key="k", base_url=sim, timeout_s=5),
        OpenAICompatTeacher(model="gpt-teacher", base_url=f"{sim}/v1", timeout_s=5),
    ]


def test_both_clients_get_reference_answers(sim: str) -> None:
    arm(sim, None)

    async def run() -> list[str]:
        out = []
        for teacher in clients(sim):
            answer = await teacher.complete(ask("where is my card"))
            assert answer.input_tokens > 0 and answer.output_tokens > 0
            out.append(answer.text)
            await teacher.aclose()
        return out

    assert asyncio.run(run()) == ["card_arrival", "card_arrival"]


def test_the_simulator_speaks_the_real_protocols(sim: str) -> None:
    arm(sim, None)
    client = anthropic.Anthropic(api_key="k", base_url=sim, max_retries=0)
    with client.messages.stream(
        model="m", max_tokens=16, messages=[{"role": "user", "content": "what is the rate"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert (
        text == "exchange_rate"
        and final.stop_reason == "end_turn"
        and final.usage.output_tokens > 0
    )
    chat = openai.OpenAI(base_url=f"{sim}/v1", api_key="k", max_retries=0)
    chunks = chat.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "what is the rate"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "exchange_rate"
    arm(sim, "529")
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(
            model="m", max_tokens=16, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 529


@pytest.mark.parametrize("mode", ["429", "529", "500"])
def test_retryable_faults_are_retried(sim: str, mode: str) -> None:
    async def run() -> str:
        for teacher in clients(sim):
            arm(sim, mode, count=2)
            resilient = ResilientTeacher(teacher, max_attempts=3, backoff_s=0.01, deadline_s=10)
            answer = await resilient.complete(ask("what is the rate"))
            assert answer.text == "exchange_rate"
            await resilient.aclose()
        return "ok"

    assert asyncio.run(run()) == "ok"


def test_retries_stop_at_max_attempts(sim: str) -> None:
    async def run() -> None:
        arm(sim, "529", count=5)
        teacher = ResilientTeacher(clients(sim)[0], max_attempts=2, backoff_s=0.01)
        with pytest.raises(TeacherError) as info:
            await teacher.complete(ask("where is my card"))
        assert info.value.retryable
        await teacher.aclose()
        arm(sim, None)

    asyncio.run(run())


def test_a_hanging_teacher_meets_the_deadline(sim: str) -> None:
    async def run() -> float:
        arm(sim, "timeout", count=-1)
        teacher = ResilientTeacher(clients(sim)[1], deadline_s=0.5)
        started = time.monotonic()
        with pytest.raises(TeacherTimeout):
            await teacher.complete(ask("where is my card"))
        await teacher.aclose()
        arm(sim, None)
        return time.monotonic() - started

    assert asyncio.run(run()) < 2.0


def test_the_circuit_opens_and_recovers() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown_s=10, clock=lambda: now[0])
    assert breaker.allow()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 11
    assert breaker.state == "half-open" and breaker.allow()
    breaker.record_failure()  # the trial failed: open again
    assert not breaker.allow()
    now[0] = 22
    breaker.record_success()
    assert breaker.state == "closed"


def test_an_open_circuit_fails_fast(sim: str) -> None:
    async def run() -> None:
        arm(sim, "500", count=-1)
        teacher = ResilientTeacher(
            clients(sim)[0], max_attempts=1, breaker=CircuitBreaker(failures=2, cooldown_s=60)
        )
        for _ in range(2):
            with pytest.raises(TeacherError):
                await teacher.complete(ask("x"))
        served = httpx.get(f"{sim}/sim/stats").json()["served"]["anthropic"]
        with pytest.raises(TeacherUnavailable):
            await teacher.complete(ask("x"))
        assert (
            httpx.get(f"{sim}/sim/stats").json()["served"]["anthropic"] == served
        )  # not even sent
        await teacher.aclose()
        arm(sim, None)

    asyncio.run(run())


def test_unknown_prompts_get_the_nearest_known_answer() -> None:
    answers = SimulatedAnswers(dict(KNOWN), tuple(sorted(set(KNOWN.values()))))
    assert answers.answer("where is my new card??") == "card_arrival"
    assert answers.answer("What is the exchange rate?") == "exchange_rate"
    assert answers.answer("zzz") in KNOWN.values()  # nothing shared: some answer, never an error


def test_simulated_accuracy_is_per_prompt_and_repeatable() -> None:
    refs = {f"q{i}": "a" for i in range(2000)}
    answers = SimulatedAnswers(refs, ("a", "b", "c"), accuracy=0.8)
    right = [answers.answer(q) == "a" for q in refs]
    assert 0.77 < sum(right) / len(right) < 0.83
    assert [answers.answer(q) for q in refs] == [answers.answer(q) for q in refs]


def test_a_stalled_stream_times_out_in_the_sdk(sim: str) -> None:
    arm(sim, "stall")
    client = anthropic.Anthropic(api_key="k", base_url=sim, max_retries=0, timeout=0.5)
    started = time.monotonic()
    # anthropic 2.x raises its transport's ReadTimeout mid-stream (APITimeoutError before it)
    with (
        pytest.raises(Exception, match="timed out"),
        client.messages.stream(
            model="m", max_tokens=16, messages=[{"role": "user", "content": "x"}]
        ) as s,
    ):
        "".join(s.text_stream)
    assert time.monotonic() - started < 3
    arm(sim, None)


SNIPS_LIKE = {  # a root that is not an object: Anthropic's tool input wraps it
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "intent": {"const": "GetWeather"},
                "slots": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["intent", "slots"],
            "additionalProperties": False,
        }
    ]
}
WEATHER = '{"intent":"GetWeather","slots":{"city":"Paris"}}'


def test_both_protocols_ask_for_the_schema_and_return_its_structure() -> None:
    """Anthropic through a forced tool whose input schema is the task's (wrapped when its
    root is not an object), OpenAI-compatible through response_format json_schema; the
    simulator answers both the way the providers do, and the real SDKs read them."""
    answers = SimulatedAnswers({"weather in paris": WEATHER, "bad": "not json"})
    served = serve_in_thread(create_sim_app(answers, timeout_s=30))
    try:
        raw = anthropic.Anthropic(api_key="k", base_url=served.url, max_retries=0)
        message = raw.messages.create(
            model="m",
            max_tokens=64,
            messages=[{"role": "user", "content": "weather in paris"}],
            tools=[{"name": "answer", "input_schema": {"type": "object", "properties": {}}}],
            tool_choice={"type": "tool", "name": "answer"},
        )
        assert message.stop_reason == "tool_use" and message.content[0].type == "tool_use"
        body = openai.OpenAI(api_key="k", base_url=f"{served.url}/v1", max_retries=0)
        done = body.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "weather in paris"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": SNIPS_LIKE, "strict": True},
            },
        )
        assert done.choices[0].message.content == WEATHER

        async def run() -> list[str]:
            out = []
            for teacher in clients(served.url):
                request = TeacherRequest(
                    "r", (Message("user", "weather in paris"),), None, 64, json_schema=SNIPS_LIKE
                )
                out.append((await teacher.complete(request)).text)
                await teacher.aclose()
            return out

        assert asyncio.run(run()) == [WEATHER, WEATHER]
    finally:
        served.stop()
