"""One behavioural suite for every ``StudentEngine``: the embedded engine, the remote
engine over real HTTP (non-streaming, streaming, and on httpx) against a real server, the
project's own gateway serving the same tiny student through the OpenAI API, and vLLM's
engine where vllm is installed (the vLLM tier, ``-m vllm``: its CPU build in CI).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from gateway.engines.base import (
    GenerationRequest,
    Message,
    SamplingParams,
    StudentEngine,
    TokenDelta,
)
from gateway.engines.remote import RemoteEngine
from gateway.engines.transformers import TransformersEngine
from tests.conftest import Gateway
from tests.vllm_tier import ON_VLLM, engine_arguments

T = TypeVar("T")


KINDS = [
    "transformers",
    "remote",
    "remote-stream",
    "remote-httpx",
    pytest.param("vllm", marks=ON_VLLM),
]


def make_engine(kind: str, student: Path, fleet: Gateway) -> StudentEngine:
    if kind == "transformers":
        return TransformersEngine(student, max_batch_size=32)
    if kind == "vllm":
        from gateway.engines.vllm import VLLMEngine

        return VLLMEngine(student, **engine_arguments())
    return RemoteEngine(
        f"{fleet.url}/v1",
        "student",
        stream=kind == "remote-stream",
        client="httpx" if kind == "remote-httpx" else "aiohttp",
        health_path="/readyz",
    )


@pytest.fixture(params=KINDS)
def on_engine(request, tiny_student, fleet):  # type: ignore[no-untyped-def]
    def run(test: Callable[[StudentEngine], Awaitable[T]]) -> T:
        async def wrapper() -> T:
            engine = make_engine(request.param, tiny_student.path, fleet)
            await engine.start()
            try:
                await engine.check_health()
                return await test(engine)
            finally:
                await engine.aclose()

        return asyncio.run(wrapper())

    run.kind = request.param  # type: ignore[attr-defined]
    return run


def chat(rid: str, text: str, **sampling: Any) -> GenerationRequest:
    params = SamplingParams(**{"max_tokens": 24, **sampling})
    return GenerationRequest(rid, params, messages=(Message("user", text),))


async def collect(engine: StudentEngine, request: GenerationRequest) -> list[TokenDelta]:
    return [d async for d in engine.generate(request)]


def text_of(deltas: list[TokenDelta]) -> str:
    return "".join(d.text for d in deltas)


def test_satisfies_the_protocol(on_engine) -> None:  # type: ignore[no-untyped-def]
    assert on_engine(lambda e: asyncio.sleep(0, isinstance(e, StudentEngine)))


def test_greedy_is_deterministic(on_engine) -> None:  # type: ignore[no-untyped-def]
    async def test(e: StudentEngine) -> tuple[list[TokenDelta], list[TokenDelta]]:
        return await collect(e, chat("a", "where is my card")), await collect(
            e, chat("b", "where is my card")
        )

    a, b = on_engine(test)
    assert [d.token for d in a] == [d.token for d in b]
    assert [d.logprob for d in a] == pytest.approx([d.logprob for d in b], abs=1e-4)
    assert a[-1].finish_reason in ("stop", "length") and a[-1].prompt_tokens > 0
    assert all(d.finish_reason is None for d in a[:-1])


def test_max_tokens_cuts_the_answer(on_engine) -> None:  # type: ignore[no-untyped-def]
    async def test(e: StudentEngine) -> tuple[list[TokenDelta], list[TokenDelta]]:
        full = await collect(e, chat("a", "my card has not arrived yet"))
        return full, await collect(e, chat("b", "my card has not arrived yet", max_tokens=2))

    full, cut = on_engine(test)
    assert len(full) > 2, "the tiny student answers in more than two tokens"
    assert len(cut) == 2 and cut[-1].finish_reason == "length"
    assert full[0].token == cut[0].token and full[1].token == cut[1].token
    assert text_of(full).startswith(text_of(cut))


def test_a_stop_string_ends_the_answer_before_it(on_engine) -> None:  # type: ignore[no-untyped-def]
    async def test(e: StudentEngine) -> tuple[str, str]:
        full = text_of(await collect(e, chat("a", "my card has not arrived yet")))
        stop = full[3:5]
        return full, text_of(
            await collect(e, chat("b", "my card has not arrived yet", stop=(stop,)))
        )

    full, stopped = on_engine(test)
    assert len(full) > 5
    assert stopped == full[: full.index(full[3:5])]


def test_logprobs_have_the_asked_shape(on_engine) -> None:  # type: ignore[no-untyped-def]
    deltas = on_engine(lambda e: collect(e, chat("a", "card lost", top_logprobs=3)))
    assert any(not d.end for d in deltas)
    for d in deltas:
        assert len(d.top_logprobs) == 3
        values = [t.logprob for t in d.top_logprobs]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        # alternatives are text, never special tokens (the end token among them)
        assert not any(t.token.startswith("<|") for t in d.top_logprobs)
        if not d.end:  # greedy: the chosen token is the likeliest
            assert d.top_logprobs[0].token == d.token
            assert d.top_logprobs[0].logprob == pytest.approx(d.logprob, abs=1e-5)
    assert all(d.text == "" for d in deltas if d.end)
    none = on_engine(lambda e: collect(e, chat("b", "card lost")))
    assert all(d.top_logprobs == () for d in none)


def test_scoring_a_text_reproduces_generation(on_engine) -> None:  # type: ignore[no-untyped-def]
    """Teacher forcing the student's own greedy answer gives back its generation logprobs;
    the pieces join to the text exactly, whatever the tokenizer normalises (case)."""

    async def test(e: StudentEngine) -> tuple[list[TokenDelta], Any, Any, Any]:
        request = chat("a", "card lost", top_logprobs=2)
        deltas = await collect(e, request)
        scored = await e.score(request, text_of(deltas), logprobs=True)
        counted = await e.score(request, "Card LOST, help", logprobs=False)
        empty = await e.score(request, "", logprobs=True)
        return deltas, scored, counted, empty

    deltas, scored, counted, empty = on_engine(test)
    if on_engine.kind.startswith("remote"):  # no tokenizer of the fleet's here
        assert scored is None and counted is None
        return
    shown = [d for d in deltas if not d.end]
    assert [t.text for t in scored.tokens] == [d.text for d in shown]
    assert [t.logprob for t in scored.tokens] == pytest.approx([d.logprob for d in shown], abs=1e-4)
    assert [[a.token for a in t.top_logprobs] for t in scored.tokens] == [
        [a.token for a in d.top_logprobs] for d in shown
    ]
    assert scored.prompt_tokens == deltas[-1].prompt_tokens
    assert "".join(t.text for t in counted.tokens) == "Card LOST, help"
    assert all(t.logprob == 0.0 and not t.top_logprobs for t in counted.tokens)
    assert empty.tokens == ()


def test_confidence_logprobs_at_a_temperature(on_engine) -> None:  # type: ignore[no-untyped-def]
    """Each token's logprob under softmax(z / T): exact on the embedded engine, renormalised
    over the top 20 remotely, which can only overstate it."""

    async def test(e: StudentEngine) -> tuple[list[TokenDelta], list[TokenDelta]]:
        at = GenerationRequest("a", SamplingParams(24), (Message("user", "card lost"),), None, 1.0)
        hot = GenerationRequest("b", SamplingParams(24), (Message("user", "card lost"),), None, 3.0)
        return await collect(e, at), await collect(e, hot)

    at_one, at_three = on_engine(test)
    for d in at_one:
        assert d.scaled_logprob is not None and d.logprob - 1e-5 <= d.scaled_logprob <= 0
        if on_engine.kind == "transformers":
            assert d.scaled_logprob == pytest.approx(d.logprob, abs=1e-4)
    # a higher T flattens the distribution: the greedy token's probability drops
    assert sum(d.scaled_logprob or 0 for d in at_three) < sum(d.scaled_logprob or 0 for d in at_one)


def test_concurrent_requests_match_sequential_ones(on_engine) -> None:  # type: ignore[no-untyped-def]
    prompts = ["where is my card", "exchange rate", "refund missing", "card stolen"] * 4

    async def test(e: StudentEngine) -> tuple[list[str], list[str]]:
        alone = [text_of(await collect(e, chat(f"a{i}", p))) for i, p in enumerate(prompts)]
        together = await asyncio.gather(
            *(collect(e, chat(f"b{i}", p)) for i, p in enumerate(prompts))
        )
        return alone, [text_of(t) for t in together]

    alone, together = on_engine(test)
    assert alone == together


def test_messages_go_through_the_chat_template(on_engine, tiny_student) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_student.path)
    turns = [{"role": "user", "content": "my card has not arrived yet"}]
    rendered = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)

    async def test(e: StudentEngine) -> tuple[str, str]:
        by_chat = text_of(await collect(e, chat("a", turns[0]["content"])))
        raw = GenerationRequest("b", SamplingParams(24), prompt=str(rendered))
        return by_chat, text_of(await collect(e, raw))

    by_chat, by_prompt = on_engine(test)
    assert by_chat and by_chat == by_prompt


def test_cancelling_the_consumer_aborts_the_request(on_engine, fleet) -> None:  # type: ignore[no-untyped-def]
    """Thirty-two long sampled requests, cancelled 20 ms in: those still running are
    aborted (the engine forgets them; a fleet sees its client leave), and the engine
    goes on answering."""
    leaving = 'distillgate_requests_total{route="none",status="499",task="student"}'

    def seen() -> float:
        lines = httpx.get(f"{fleet.url}/metrics").text.splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(leaving))

    async def test(e: StudentEngine) -> tuple[int, str, int | None]:
        consumers = [
            asyncio.ensure_future(
                collect(e, chat(f"s{i}", "card", max_tokens=60, temperature=2.0, seed=i))
            )
            for i in range(32)
        ]
        await asyncio.sleep(0.02)
        for c in consumers:
            c.cancel()
        results = await asyncio.gather(*consumers, return_exceptions=True)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        pending = None
        if isinstance(e, TransformersEngine):
            for _ in range(100):
                if e.pending == 0:
                    break
                await asyncio.sleep(0.01)
            pending = e.pending
        after = text_of(await collect(e, chat("after", "where is my card")))
        return cancelled, after, pending

    before = seen()
    cancelled, after, pending = on_engine(test)
    assert cancelled > 0 and after
    if on_engine.kind == "transformers":
        assert pending == 0
    elif on_engine.kind.startswith("remote"):  # the fleet saw its clients leave mid-request
        deadline = time.monotonic() + 5
        while seen() <= before:
            assert time.monotonic() < deadline, "the fleet never saw the requests go"
            time.sleep(0.05)
