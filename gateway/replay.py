"""Replay labelled examples through a student engine, as serving would answer them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.engines.base import GenerationRequest, Message, SamplingParams, StudentEngine
from training.examples import Example

__all__ = ["StudentAnswer", "replay"]


@dataclass(frozen=True)
class StudentAnswer:
    text: str
    token_ids: tuple[int, ...]  # every generated token, the end token included
    logprobs: tuple[float, ...]
    finish_reason: str | None


async def replay(
    engine: StudentEngine, examples: Sequence[Example], *, max_tokens: int, prefix: str = "replay"
) -> list[StudentAnswer]:
    """Greedy answers for every example, sent together so the engine batches them."""

    async def one(i: int) -> StudentAnswer:
        chat = tuple(Message(m["role"], m["content"]) for m in examples[i].chat())
        request = GenerationRequest(
            f"{prefix}-{i}", SamplingParams(max_tokens=max_tokens), messages=chat
        )
        deltas = [d async for d in engine.generate(request)]
        return StudentAnswer(
            "".join(d.text for d in deltas),
            tuple(d.token_id for d in deltas),
            tuple(d.logprob for d in deltas),
            deltas[-1].finish_reason if deltas else None,
        )

    return list(await asyncio.gather(*(one(i) for i in range(len(examples)))))
