"""The student's turn: its whole answer under the task's limits, and the confidence in it.

The answer is generated to its end (a bounded answer is a few tokens) because the decision
needs all of it: the confidence of a bounded answer is its sequence probability, end token
included, at the calibrator's temperature (``calibration.Calibration.confidence``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import aclosing
from dataclasses import dataclass

from calibration import confidence as sequence_confidence
from gateway.engines.base import FinishReason, GenerationRequest, TokenDelta
from gateway.engines.prompts import check_prompt_tokens
from gateway.errors import DeadlineExceeded, EngineError, EngineUnavailable
from gateway.pipeline.deployment import TaskRuntime

__all__ = ["StudentTurn", "run_student"]


@dataclass(frozen=True)
class StudentTurn:
    deltas: list[TokenDelta]  # every generated token, the end token included
    text: str
    raw_confidence: float  # exp(sum of logprobs) at T = 1
    confidence: float  # calibrated; the raw one when the task has no calibrator
    finish_reason: FinishReason
    seconds: float

    @property
    def shown(self) -> tuple[TokenDelta, ...]:
        """The tokens a client may see: all but the end token."""
        return tuple(d for d in self.deltas if not d.end)


async def run_student(runtime: TaskRuntime, gen: GenerationRequest, deadline: float) -> StudentTurn:
    """``deadline`` (loop time) bounds the whole turn, queueing included."""
    task, calibration = runtime.task, runtime.calibration
    if calibration is not None:
        gen = dataclasses.replace(gen, confidence_temperature=calibration.temperature)
    schema = task.answer_check.schema_json
    if schema is not None:  # a structured task's student writes only JSON of its schema
        gen = dataclasses.replace(
            gen, sampling=dataclasses.replace(gen.sampling, json_schema=schema)
        )
    engine = runtime.engine
    if engine is None:
        raise EngineUnavailable(f"Task {task.name!r} has no student yet.")
    started = time.perf_counter()
    try:
        async with asyncio.timeout_at(deadline), aclosing(engine.generate(gen)) as s:
            deltas = [d async for d in s]
    except TimeoutError:
        raise DeadlineExceeded(
            f"The student did not answer within task {task.name!r}'s deadline "
            f"({task.limits.deadline_s:g} s)."
        ) from None
    if not deltas:
        raise EngineError("the student produced no output")
    seconds = time.perf_counter() - started
    check_prompt_tokens(deltas[-1].prompt_tokens, gen)  # a remote student counts late
    raw = sequence_confidence([d.logprob for d in deltas])
    confidence = raw
    if calibration is not None:
        scaled = [d.logprob if d.scaled_logprob is None else d.scaled_logprob for d in deltas]
        confidence = calibration.confidence(scaled)
    text = "".join(d.text for d in deltas)
    return StudentTurn(deltas, text, raw, confidence, deltas[-1].finish_reason or "stop", seconds)
