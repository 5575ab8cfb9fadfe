"""Replay labelled examples through a student engine, as serving would answer them."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.engines.base import SamplingParams, StudentEngine
from gateway.examples import Example
from gateway.pipeline.prompt import example_request
from gateway.tasks import PromptFormat

__all__ = ["StudentAnswer", "replay"]


@dataclass(frozen=True)
class StudentAnswer:
    text: str
    token_ids: tuple[int, ...]  # every generated token, the end token included
    logprobs: tuple[float, ...]
    finish_reason: str | None
    scaled_logprobs: tuple[float, ...] = ()  # at ``replay``'s temperature, when it had one


async def replay(
    engine: StudentEngine,
    examples: Sequence[Example],
    *,
    max_tokens: int,
    prompt: PromptFormat,
    prefix: str = "replay",
    temperature: float | None = None,
    json_schema: str | None = None,
) -> list[StudentAnswer]:
    """Greedy answers for every example, by the task's prompt policy, sent together so the
    engine batches them; ``temperature``: also each token's logprob at a calibrator's T, as
    serving computes the confidence; ``json_schema``: constrained to it, as serving is."""

    async def one(i: int) -> StudentAnswer:
        sampling = SamplingParams(max_tokens=max_tokens, json_schema=json_schema)
        request = example_request(prompt, examples[i], f"{prefix}-{i}", sampling)
        if temperature is not None:
            request = dataclasses.replace(request, confidence_temperature=temperature)
        deltas = [d async for d in engine.generate(request)]
        return StudentAnswer(
            "".join(d.text for d in deltas),
            tuple(d.token_id for d in deltas),
            tuple(d.logprob for d in deltas),
            deltas[-1].finish_reason if deltas else None,
            tuple(d.logprob if d.scaled_logprob is None else d.scaled_logprob for d in deltas),
        )

    return list(await asyncio.gather(*(one(i) for i in range(len(examples)))))
