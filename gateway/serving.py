"""The data path: request → task → student → confidence → accept or escalate → response.

Routes hand over a parsed wire request; serving resolves the task, runs the student,
turns its token logprobs (at the calibrator's temperature) into a confidence, applies
the pure rule in ``routing.py`` and, on escalation, asks the teacher. A teacher failure
answers with the student (``student-fallback``) or an error, per the task's policy.

Streaming: the decision needs the whole student answer, so it is generated first (a
bounded answer is a few tokens) and then streamed, student tokens or teacher text; no
content byte leaves before the route is known. Free-text tasks follow the same policy
within their ``max_tokens``. ``answer()`` is also what ``distillgate evaluate`` replays.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from calibration import Calibration
from gateway.api.protocol import ChatCompletionRequest, CompletionRequest, new_id, now
from gateway.api.responses import ChatRenderer, CompletionRenderer, Renderer, usage
from gateway.engines.base import GenerationRequest, Message, StudentEngine, TokenDelta
from gateway.errors import EngineError, TeacherError, UnknownTask
from gateway.routing import Reason, Route, decide
from gateway.tasks import Task
from gateway.teachers.base import Teacher, TeacherRequest

__all__ = ["Answer", "Serving", "TaskRuntime", "teacher_request"]

logger = logging.getLogger(__name__)

Forced = Literal["student", "teacher"] | None


@dataclass
class TaskRuntime:
    """What serving needs per task, assembled at start-up by the app."""

    task: Task
    engine: StudentEngine
    calibration: Calibration | None = None
    teacher: Teacher | None = None
    teacher_label: str = ""  # shown in /v1/models, e.g. "simulator (no ANTHROPIC_API_KEY)"


@dataclass
class Answer:
    route: Route
    reason: Reason
    text: str
    confidence: float
    raw_confidence: float
    student_text: str
    deltas: list[TokenDelta]  # the student's tokens (also when the teacher answered)
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    teacher_model: str | None = None
    teacher_error: str | None = None

    def headers(self, task: str) -> dict[str, str]:
        return {
            "x-distillgate-task": task,
            "x-distillgate-route": self.route.value,
            "x-distillgate-confidence": f"{self.confidence:.4f}",
        }


def _teacher_system(task: Task) -> str | None:
    parts = [task.teacher.system] if task.teacher and task.teacher.system else []
    if task.answers:
        if not parts:
            parts.append("Answer with exactly one of the allowed answers below and nothing else.")
        parts.append("Allowed answers:\n" + "\n".join(task.answers))
    return "\n\n".join(parts) or None


def teacher_request(task: Task, gen: GenerationRequest) -> TeacherRequest:
    """What the teacher is asked: the turns, the client's system prompt plus the task's."""
    turns = gen.messages or (Message("user", gen.prompt or ""),)
    system = "\n\n".join(m.content for m in turns if m.role == "system")
    own = _teacher_system(task)
    return TeacherRequest(
        request_id=gen.request_id,
        messages=tuple(m for m in turns if m.role != "system"),
        system="\n\n".join(s for s in (system, own) if s) or None,
        max_tokens=task.teacher.max_tokens if task.teacher else task.generation.max_tokens,
    )


class Serving:
    def __init__(self, runtimes: Mapping[str, TaskRuntime]) -> None:
        self.runtimes = runtimes

    @property
    def engines(self) -> list[StudentEngine]:
        return list({id(r.engine): r.engine for r in self.runtimes.values()}.values())

    def runtime(self, name: str) -> TaskRuntime:
        runtime = self.runtimes.get(name)
        if runtime is None:
            raise UnknownTask(
                f"The model {name!r} does not exist; see GET /v1/models.", param="model"
            )
        return runtime

    def models(self) -> dict[str, Any]:
        data = []
        for r in self.runtimes.values():
            entry: dict[str, Any] = {
                "id": r.task.name,
                "object": "model",
                "created": 0,
                "owned_by": "distillgate",
                "description": r.task.description,
                "teacher": r.teacher_label or None,
                "calibrated": r.calibration is not None,
            }
            if r.calibration is not None:
                entry["threshold"] = r.calibration.threshold
            data.append(entry)
        return {"object": "list", "data": data}

    # -- the data path -------------------------------------------------------------------
    async def answer(
        self, runtime: TaskRuntime, gen: GenerationRequest, *, forced: Forced = None
    ) -> Answer:
        task, calibration = runtime.task, runtime.calibration
        if calibration is not None:
            gen = GenerationRequest(
                gen.request_id,
                gen.sampling,
                gen.messages,
                gen.prompt,
                confidence_temperature=calibration.temperature,
            )
        async with aclosing(runtime.engine.generate(gen)) as stream:
            deltas = [d async for d in stream]
        if not deltas:
            raise EngineError("the student produced no output")
        text = "".join(d.text for d in deltas)
        raw = math.exp(sum(d.logprob for d in deltas))
        confidence = raw
        if calibration is not None:
            scaled = [d.logprob if d.scaled_logprob is None else d.scaled_logprob for d in deltas]
            confidence = calibration.confidence(scaled)
        valid = deltas[-1].finish_reason == "stop" and (
            task.answer_set is None or text in task.answer_set
        )
        decision = decide(
            confidence=confidence,
            threshold=calibration.threshold if calibration else 0.0,
            valid=valid,
            forced=forced,
            has_teacher=runtime.teacher is not None,
        )
        answer = Answer(
            route=Route.STUDENT,
            reason=decision.reason,
            text=text,
            confidence=confidence,
            raw_confidence=raw,
            student_text=text,
            deltas=deltas,
            prompt_tokens=deltas[-1].prompt_tokens,
            completion_tokens=len(deltas),
            finish_reason=deltas[-1].finish_reason,
        )
        if not decision.escalate or runtime.teacher is None:
            return answer
        try:
            reply = await runtime.teacher.complete(teacher_request(task, gen))
        except TeacherError as exc:
            logger.warning("teacher failed for %s (%s): %s", gen.request_id, task.name, exc.message)
            if task.routing.on_teacher_failure == "error":
                raise
            answer.route, answer.teacher_error = Route.STUDENT_FALLBACK, exc.message
            return answer
        answer.route, answer.text, answer.teacher_model = Route.TEACHER, reply.text, reply.model
        answer.prompt_tokens, answer.completion_tokens = reply.input_tokens, reply.output_tokens
        answer.finish_reason = "stop"
        return answer

    # -- the wire --------------------------------------------------------------------------
    def _prepare(
        self, body: ChatCompletionRequest | CompletionRequest, request_id: str
    ) -> tuple[TaskRuntime, GenerationRequest, Renderer]:
        runtime = self.runtime(body.model)
        task = runtime.task
        renderer: Renderer
        if isinstance(body, ChatCompletionRequest):
            gen = GenerationRequest(
                request_id, body.to_sampling(task), messages=body.to_messages(task)
            )
            renderer = ChatRenderer(logprobs=body.logprobs)
        else:
            gen = GenerationRequest(request_id, body.to_sampling(task), prompt=body.prompt_text())
            renderer = CompletionRenderer(logprobs=body.logprobs is not None)
        return runtime, gen, renderer

    def _envelope(self, task: Task, renderer: Renderer, chunk: bool = False) -> dict[str, Any]:
        prefix = "chatcmpl" if isinstance(renderer, ChatRenderer) else "cmpl"
        kind = renderer.chunk_name if chunk else renderer.object_name
        return {"id": new_id(prefix), "object": kind, "created": now(), "model": task.name}

    async def complete(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        request_id: str,
        forced: Forced = None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        runtime, gen, renderer = self._prepare(body, request_id)
        answer = await self.answer(runtime, gen, forced=forced)
        deltas = answer.deltas if answer.route != Route.TEACHER else []
        choice = renderer.full(answer.text, deltas, answer.finish_reason)
        if answer.route == Route.TEACHER:
            choice["logprobs"] = None  # the teacher's tokens carry none
        body_out = {
            **self._envelope(runtime.task, renderer),
            "choices": [choice],
            "usage": usage(answer.prompt_tokens, answer.completion_tokens),
        }
        return body_out, answer.headers(runtime.task.name)

    async def stream(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        request_id: str,
        forced: Forced = None,
    ) -> tuple[AsyncIterator[str], dict[str, str]]:
        runtime, gen, renderer = self._prepare(body, request_id)
        answer = await self.answer(runtime, gen, forced=forced)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _sse(
            answer, renderer, self._envelope(runtime.task, renderer, chunk=True), include_usage
        )
        return events, answer.headers(runtime.task.name)


def _teacher_piece(text: str) -> TokenDelta:
    return TokenDelta(token_id=-1, text=text, logprob=0.0, finish_reason="stop")


async def _sse(
    answer: Answer, renderer: Renderer, envelope: dict[str, Any], include_usage: bool
) -> AsyncIterator[str]:
    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        data = {**envelope, "choices": choices, **extra}
        if include_usage and "usage" not in extra:
            data["usage"] = None
        return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"

    opening = renderer.opening()
    if opening is not None:
        yield event([opening])
    pieces: Sequence[TokenDelta] = (
        answer.deltas if answer.route != Route.TEACHER else [_teacher_piece(answer.text)]
    )
    for i, delta in enumerate(pieces):
        finish = answer.finish_reason if i == len(pieces) - 1 else None
        piece = renderer.piece(delta, finish)
        if answer.route == Route.TEACHER:
            piece["logprobs"] = None
        yield event([piece])
    if include_usage:
        yield event([], usage=usage(answer.prompt_tokens, answer.completion_tokens))
    yield "data: [DONE]\n\n"
