"""Concurrent clients share forward passes; overload is refused, not queued forever."""

from __future__ import annotations

import asyncio

import httpx
import openai

from gateway.settings import Settings
from tests.conftest import Gateway, write_task

PROMPTS = [
    "I still have not received my card",
    "what is the exchange rate today",
    "someone stole my card",
    "my refund is not showing up",
]


def test_32_simultaneous_requests_succeed_and_are_batched(gateway: Gateway) -> None:
    steps_before = gateway.metric("distillgate_engine_batch_size_count")
    rows_before = gateway.metric("distillgate_engine_batch_size_sum")

    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="test", max_retries=0)
        results = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="banking77", messages=[{"role": "user", "content": PROMPTS[i % 4]}]
                )
                for i in range(32)
            )
        )
        return [r.choices[0].message.content or "" for r in results]

    answers = asyncio.run(run())
    assert len(answers) == 32 and all(answers)
    # The same prompt gets the same greedy answer whether or not it shared a batch.
    for i in range(4, 32):
        assert answers[i] == answers[i % 4]
    steps = gateway.metric("distillgate_engine_batch_size_count") - steps_before
    rows = gateway.metric("distillgate_engine_batch_size_sum") - rows_before
    assert rows / steps > 1.5, f"mean rows per decode step {rows / steps:.2f}: not batched"


def test_a_full_queue_answers_429_with_retry_after(tiny_student, run_gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_task(tmp_path, tiny_student.path)
    gw = run_gateway(Settings(tasks_dir=tmp_path, max_batch_size=1, max_waiting=1))

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {
                "model": "banking77",
                "messages": [{"role": "user", "content": "card"}],
                "max_tokens": 24,
            }
            return await asyncio.gather(
                *(client.post(f"{gw.url}/v1/chat/completions", json=body) for _ in range(24))
            )

    responses = asyncio.run(run())
    statuses = sorted({r.status_code for r in responses})
    assert statuses == [200, 429], statuses
    refused = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.json()["error"]["type"] == "server_overloaded" for r in refused)

    async def through_the_sdk() -> list[object]:
        client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="test", max_retries=0)
        calls = [
            client.chat.completions.create(
                model="banking77", messages=[{"role": "user", "content": "card"}], max_tokens=24
            )
            for _ in range(24)
        ]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    # The SDK sees a typed rate-limit error it can back off on.
    outcomes = asyncio.run(through_the_sdk())
    assert any(isinstance(o, openai.RateLimitError) for o in outcomes)
    assert all(
        isinstance(o, openai.RateLimitError) or not isinstance(o, Exception) for o in outcomes
    )


def test_api_keys_are_enforced_when_configured(tiny_student, run_gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_task(tmp_path, tiny_student.path)
    gw = run_gateway(Settings(tasks_dir=tmp_path, api_keys=["sekret"]))
    messages = [{"role": "user", "content": "card"}]
    try:
        gw.client(api_key="wrong").chat.completions.create(model="banking77", messages=messages)
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as exc:
        assert exc.status_code == 401 and exc.body["code"] == "invalid_api_key"  # type: ignore[index]
    assert (
        httpx.post(
            f"{gw.url}/v1/chat/completions", json={"model": "banking77", "messages": messages}
        ).status_code
        == 401
    )
    assert (
        gw.client(api_key="sekret")
        .chat.completions.create(model="banking77", messages=messages)
        .choices
    )
    assert httpx.get(f"{gw.url}/healthz").status_code == 200
