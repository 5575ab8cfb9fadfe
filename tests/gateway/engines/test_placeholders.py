"""Placeholders: values a student copies from its input, masked in what it reads and writes
and restored in what the client sees (streamed, scored and calibrated alike)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from gateway.engines.base import GenerationRequest, Message, SamplingParams, TokenDelta
from gateway.engines.placeholders import PlaceholderEngine, Placeholders, read_placeholders
from gateway.examples import Example
from gateway.testing import FakeEngine

E2E = Placeholders({"X-NAME": r"name\[([^\]]+)\]", "X-NEAR": r"near\[([^\]]+)\]"})
MR = "name[The Eagle], eatType[pub], near[Burger King]"


def test_values_are_masked_in_the_input_and_the_answer_and_restored() -> None:
    masked, values = E2E.mask_input(MR)
    assert masked == "name[X-NAME], eatType[pub], near[X-NEAR]"
    assert values == {"X-NAME": "The Eagle", "X-NEAR": "Burger King"}
    # Any case, and a leading "The" optional; a longer word that contains it is left alone.
    answer = "the Eagle is a pub near Burger King. Eagles nest nearby, says Eagle."
    assert E2E.mask_answer(answer, values) == (
        "X-NAME is a pub near X-NEAR. Eagles nest nearby, says X-NAME."
    )
    assert E2E.restore("X-NAME is near X-NEAR.", values) == "The Eagle is near Burger King."
    assert E2E.mask_input("eatType[pub]") == ("eatType[pub]", {})


def test_a_placeholder_needs_one_group_and_may_not_hide_in_another() -> None:
    with pytest.raises(ValueError, match="one capture group"):
        Placeholders({"X-NAME": r"name\[[^\]]+\]"})
    with pytest.raises(ValueError, match="part of another"):
        Placeholders({"X": r"a(b)", "X-NAME": r"c(d)"})


def test_a_training_pair_is_masked_as_a_prompt_or_its_last_user_turn() -> None:
    pair = E2E.mask_example(Example("The Eagle is near Burger King.", prompt=MR))
    assert pair.prompt and "X-NAME" in pair.prompt and pair.answer == "X-NAME is near X-NEAR."
    turns = (
        {"role": "user", "content": "name[Zizzi]"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": MR},
    )
    chat = E2E.mask_example(Example("The Eagle it is.", messages=turns))
    assert chat.messages[0]["content"] == "name[Zizzi]"
    assert chat.messages[2]["content"].startswith("name[X-NAME]")
    assert chat.answer == "X-NAME it is."


class Characters:
    """A student that writes its answer one character at a time, so a placeholder arrives
    in pieces; it records what it was asked."""

    def __init__(self, answer: str) -> None:
        self.answer, self.seen, self.closed = answer, [], False  # type: list[str]

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        self.seen.append(request.messages[-1].content if request.messages else request.prompt)
        try:
            for i, c in enumerate(self.answer):
                last = i == len(self.answer) - 1
                yield TokenDelta(i, c, -0.1, token=c, finish_reason="stop" if last else None)
        finally:
            self.closed = True


def request(content: str) -> GenerationRequest:
    return GenerationRequest(
        "r1", SamplingParams(max_tokens=64), messages=(Message("user", content),)
    )


def test_a_streamed_answer_never_shows_a_placeholder_it_has_a_value_for() -> None:
    inner = Characters("X-NAME, near X-NEAR, is X-NOT a pub")
    engine = PlaceholderEngine(inner, E2E)  # type: ignore[arg-type]

    async def run() -> list[TokenDelta]:
        return [d async for d in engine.generate(request(MR))]

    deltas = asyncio.run(run())
    pieces = [d.text for d in deltas]
    assert inner.seen == ["name[X-NAME], eatType[pub], near[X-NEAR]"]
    assert "".join(pieces) == "The Eagle, near Burger King, is X-NOT a pub"
    shown = ["".join(pieces[:k]) for k in range(len(pieces) + 1)]
    assert not any("X-NAME" in s or "X-NEAR" in s for s in shown)
    assert "The Eagle" in shown[7]  # released as soon as the placeholder is whole
    # One delta per token still, with its log-probability: confidence is unchanged.
    assert len(deltas) == len(inner.answer) and all(d.logprob == -0.1 for d in deltas)


def test_a_client_gone_closes_the_students_generation_at_once() -> None:
    inner = Characters("X-NAME is a pub")
    engine = PlaceholderEngine(inner, E2E)  # type: ignore[arg-type]

    async def run() -> None:
        stream = engine.generate(request(MR))
        await anext(stream)
        await stream.aclose()
        assert inner.closed  # now, not when the garbage is collected

    asyncio.run(run())


def test_a_scored_text_is_scored_masked_and_spelled_restored() -> None:
    inner = FakeEngine({})
    engine = PlaceholderEngine(inner, E2E)

    async def run() -> list[str]:
        scored = await engine.score(request(MR), "The Eagle is near Burger King", logprobs=True)
        assert scored is not None
        return [t.text for t in scored.tokens]

    pieces = asyncio.run(run())
    assert "".join(pieces) == "The Eagle is near Burger King"


def test_the_folder_keeps_the_placeholders_a_student_was_trained_with(tmp_path: Path) -> None:
    assert read_placeholders(tmp_path) is None
    E2E.save(tmp_path)
    assert read_placeholders(tmp_path) == E2E
