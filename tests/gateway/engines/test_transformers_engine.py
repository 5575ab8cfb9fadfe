"""The embedded engine on a real (tiny) student: batching, aborts, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.engines.base import (
    GenerationRequest,
    Message,
    SamplingParams,
    StudentEngine,
    TokenDelta,
)
from gateway.engines.transformers import TransformersEngine
from gateway.errors import InvalidRequest, Overloaded


def request(rid: str, text: str, **sampling: object) -> GenerationRequest:
    params = SamplingParams(**{"max_tokens": 16, "top_logprobs": 2, **sampling})  # type: ignore[arg-type]
    return GenerationRequest(rid, params, messages=(Message("user", text),))


async def collect(engine: TransformersEngine, req: GenerationRequest) -> list[TokenDelta]:
    return [d async for d in engine.generate(req)]


def run_engine(student, test, **kw):  # type: ignore[no-untyped-def]
    async def wrapper() -> object:
        engine = TransformersEngine(student, **kw)
        await engine.start()
        try:
            return await test(engine)
        finally:
            await engine.aclose()

    return asyncio.run(wrapper())


def test_satisfies_the_protocol(tiny_student) -> None:  # type: ignore[no-untyped-def]
    engine = TransformersEngine(tiny_student.path)
    assert isinstance(engine, StudentEngine)


def test_batched_decoding_matches_one_at_a_time(tiny_student) -> None:  # type: ignore[no-untyped-def]
    prompts = [e.prompt for e in tiny_student.test][:24]
    steps: list[int] = []

    async def test(
        engine: TransformersEngine,
    ) -> tuple[list[list[TokenDelta]], list[list[TokenDelta]]]:
        alone = [await collect(engine, request(f"a{i}", p)) for i, p in enumerate(prompts)]
        together = await asyncio.gather(
            *(collect(engine, request(f"b{i}", p)) for i, p in enumerate(prompts))
        )
        return alone, together

    alone, together = run_engine(tiny_student.path, test, max_batch_size=32, on_step=steps.append)
    assert max(steps) > 1
    for a, b in zip(alone, together, strict=True):
        assert [d.token_id for d in a] == [d.token_id for d in b]
        assert [d.logprob for d in a] == pytest.approx([d.logprob for d in b], abs=1e-4)
        assert a[-1].finish_reason in ("stop", "length")


def test_greedy_logprobs_are_the_top_alternative(tiny_student) -> None:  # type: ignore[no-untyped-def]
    deltas = run_engine(tiny_student.path, lambda e: collect(e, request("r", "where is my card")))
    assert deltas[-1].end and not any(d.end for d in deltas[:-1])
    for d in deltas[:-1]:  # the end token is special: it is never among the alternatives
        assert d.top_logprobs[0].token_id == d.token_id
        assert d.top_logprobs[0].logprob == pytest.approx(d.logprob)
        assert d.top_logprobs[0].logprob >= d.top_logprobs[1].logprob
    assert deltas[-1].token_id not in {t.token_id for t in deltas[-1].top_logprobs}


def test_closing_the_stream_aborts_the_request(tiny_student) -> None:  # type: ignore[no-untyped-def]
    async def test(engine: TransformersEngine) -> int:
        stream: AsyncIterator[TokenDelta] = engine.generate(
            request("r", "card", max_tokens=60, temperature=2.0, seed=1)
        )
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        for _ in range(100):
            if engine.pending == 0:
                break
            await asyncio.sleep(0.01)
        return engine.pending

    assert run_engine(tiny_student.path, test) == 0


def test_the_waiting_queue_is_bounded(tiny_student) -> None:  # type: ignore[no-untyped-def]
    async def test(engine: TransformersEngine) -> list[object]:
        reqs = [collect(engine, request(f"r{i}", "card", max_tokens=16)) for i in range(12)]
        return await asyncio.gather(*reqs, return_exceptions=True)

    results = run_engine(tiny_student.path, test, max_batch_size=1, max_waiting=2)
    refused = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, list)]
    assert refused and served and len(refused) + len(served) == 12
    assert all(r.status_code == 429 and r.retry_after >= 1 for r in refused)


def test_a_prompt_beyond_the_context_is_refused(tiny_student) -> None:  # type: ignore[no-untyped-def]
    long = GenerationRequest(
        "r",
        SamplingParams(max_tokens=8),
        messages=(Message("system", "card " * 300), Message("user", "hi")),
    )
    with pytest.raises(InvalidRequest, match="context"):
        run_engine(tiny_student.path, lambda e: collect(e, long))


def test_long_user_text_is_cut_as_in_training(tiny_student) -> None:  # type: ignore[no-untyped-def]
    """The trainer kept the first 64 tokens of user text; serving reads the same."""
    words = "where is the card I ordered " * 40

    async def test(engine: TransformersEngine) -> tuple[list[int], list[int]]:
        cut = engine.tokenizer.decode(engine.tokenizer.encode(words, add_special_tokens=False)[:64])
        return engine.encode(request("a", words)), engine.encode(request("b", cut))

    whole, cut = run_engine(tiny_student.path, test)
    assert whole == cut and len(whole) < 80


def test_a_vanishing_temperature_is_greedy_and_harms_nothing(tiny_student) -> None:  # type: ignore[no-untyped-def]
    """Found by the fuzz tests: T = 1e-300 overflowed softmax(z / T) to NaN, the sampler
    raised in the worker thread, and the engine died for every client."""

    async def test(engine: TransformersEngine) -> tuple[list[TokenDelta], list[TokenDelta]]:
        tiny = await collect(engine, request("a", "card lost", temperature=1e-300, seed=1))
        await engine.check_health()
        return tiny, await collect(engine, request("b", "card lost"))

    tiny, greedy = run_engine(tiny_student.path, test)
    assert [d.token_id for d in tiny] == [d.token_id for d in greedy]
