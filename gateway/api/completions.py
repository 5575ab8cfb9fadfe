"""The one wire ↔ domain adapter: an OpenAI request in, the pipeline's ``Answer`` out as
OpenAI's body or its server-sent events, with the distillgate headers.

Streaming: the decision needs the whole student answer, so the pipeline answers first (a
bounded answer is a few tokens) and the answer is then streamed, student tokens or
teacher text; no content byte leaves before the route is known.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.api.protocol import ChatCompletionRequest, CompletionRequest, new_id, now
from gateway.api.render import (
    ChatRenderer,
    CompletionRenderer,
    Renderer,
    ToolCallRenderer,
    usage,
)
from gateway.engines.base import GenerationRequest
from gateway.keys import ClientKey
from gateway.pipeline.answer import Forced, Pipeline
from gateway.pipeline.base import Answer
from gateway.pipeline.decision import Route
from gateway.pipeline.deployment import TaskRuntime
from gateway.pipeline.fields import field_confidences, least_sure
from gateway.pipeline.limits import check_input_chars, check_message_count
from gateway.pipeline.reply import ReplyOptions
from gateway.tasks import Task

__all__ = ["complete", "headers", "models", "stream"]

Body = ChatCompletionRequest | CompletionRequest


def headers(answer: Answer, runtime: TaskRuntime) -> dict[str, str]:
    out = {
        "x-distillgate-task": runtime.task.name,
        "x-distillgate-route": answer.route.value,
        "x-distillgate-confidence": f"{answer.confidence:.4f}",
        "x-distillgate-student": answer.student_version or runtime.version_label,
    }
    if runtime.task.answer_check.structured:  # which field to check first, on either route
        least = least_sure(field_confidences(answer.deltas))
        if least is not None:
            out["x-distillgate-least-sure-field"] = f"{least[0]}; confidence={least[1]:.4g}"
    if answer.route == Route.CACHE:  # the teacher's earlier answer, not a new call
        out["x-distillgate-cache"] = "hit"
    if answer.budget_spent is not None:  # the student answered: the teacher budget is spent
        out["x-distillgate-budget-spent"] = answer.budget_spent
        out["x-distillgate-reason"] = "teacher_budget_spent"
    elif answer.route == Route.STUDENT_FALLBACK:
        out["x-distillgate-reason"] = "teacher_failed"
    if answer.teacher_usage is not None:
        out["x-distillgate-teacher-usage"] = (
            f"input_tokens={answer.teacher_usage[0]}, output_tokens={answer.teacher_usage[1]}"
        )
    return out


def prepare(
    pipeline: Pipeline, body: Body, request_id: str
) -> tuple[TaskRuntime, GenerationRequest, ReplyOptions, Renderer]:
    """The wire request in domain terms: the task, the student's request under the task's
    own limits, the client's options, and the renderer of its wire format."""
    runtime = pipeline.runtime(body.model)
    task = runtime.task
    limits = task.limits
    renderer: Renderer
    if isinstance(body, ChatCompletionRequest):
        check_message_count(task, len(body.messages))
        gen = GenerationRequest(
            request_id,
            body.to_sampling(task),
            messages=body.to_messages(task),
            max_prompt_tokens=limits.max_prompt_tokens,
        )
        call = body.tool_call(task)
        if call is None:
            renderer = ChatRenderer(logprobs=body.logprobs)
        else:
            renderer = ToolCallRenderer(body.logprobs, function=call.name, call_id=new_id("call"))
    else:
        gen = GenerationRequest(
            request_id,
            body.to_sampling(task),
            prompt=body.prompt_text(),
            max_prompt_tokens=limits.max_prompt_tokens,
        )
        renderer = CompletionRenderer(logprobs=body.logprobs is not None)
    check_input_chars(task, gen)
    return runtime, gen, body.reply_options(task), renderer


def _envelope(task: Task, renderer: Renderer, chunk: bool = False) -> dict[str, Any]:
    prefix = "chatcmpl" if isinstance(renderer, ChatRenderer) else "cmpl"
    kind = renderer.chunk_name if chunk else renderer.object_name
    return {"id": new_id(prefix), "object": kind, "created": now(), "model": task.name}


async def complete(
    pipeline: Pipeline,
    body: Body,
    request_id: str,
    forced: Forced = None,
    caller: ClientKey | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The whole response body and its headers."""
    with pipeline.deployment.lease():
        runtime, gen, options, renderer = prepare(pipeline, body, request_id)
        answer = await pipeline.answer(runtime, gen, forced=forced, options=options, caller=caller)
    out = {
        **_envelope(runtime.task, renderer),
        "choices": [renderer.full(answer.text, answer.tokens, answer.finish_reason)],
        "usage": usage(answer.prompt_tokens, answer.completion_tokens),
    }
    return out, headers(answer, runtime)


async def stream(
    pipeline: Pipeline,
    body: Body,
    request_id: str,
    forced: Forced = None,
    caller: ClientKey | None = None,
) -> tuple[AsyncIterator[str], dict[str, str], int]:
    """The answer's SSE events, its headers and its total tokens (rate limits)."""
    with pipeline.deployment.lease():
        runtime, gen, options, renderer = prepare(pipeline, body, request_id)
        answer = await pipeline.answer(runtime, gen, forced=forced, options=options, caller=caller)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    events = _sse(answer, renderer, _envelope(runtime.task, renderer, chunk=True), include_usage)
    tokens = answer.prompt_tokens + answer.completion_tokens
    return events, headers(answer, runtime), tokens


async def _sse(
    answer: Answer, renderer: Renderer, envelope: dict[str, Any], include_usage: bool
) -> AsyncIterator[str]:
    """OpenAI's event order: an opening (chat), one event per served token (the whole text
    at once when its tokens are not known), a closing event with the finish reason and no
    content, then the usage event when asked for, then ``[DONE]``."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        data = {**envelope, "choices": choices, **extra}
        if include_usage and "usage" not in extra and renderer.chunk_usage:
            data["usage"] = None
        return f"data: {orjson.dumps(data).decode()}\n\n"

    opening = renderer.opening()
    if opening is not None:
        yield event([opening])
    if answer.tokens is not None:
        for token in answer.tokens:
            yield event([renderer.piece(token.text, token)])
    elif answer.text:
        yield event([renderer.piece(answer.text, None)])
    yield event([renderer.closing(answer.finish_reason)])
    if include_usage:
        yield event([], usage=usage(answer.prompt_tokens, answer.completion_tokens))
    yield "data: [DONE]\n\n"


def models(pipeline: Pipeline) -> dict[str, Any]:
    """``GET /v1/models``: the tasks served, with their teacher, calibration and audit."""
    data = []
    for r in pipeline.runtimes.values():
        entry: dict[str, Any] = {
            "id": r.task.name,
            "object": "model",
            "created": 0,
            "owned_by": "distillgate",
            "description": r.task.description,
            "teacher": r.teacher_label or None,
            "student_version": r.version_label,
            "trial": r.trial_label,  # a candidate on trial: "v0003 canary 0.1"
            "calibrated": r.calibration is not None,
        }
        if r.calibration is not None:
            entry["threshold"] = r.calibration.threshold
        if r.task.answer_schema is not None:  # what response_format json_schema must send
            entry["answer_schema"] = r.task.answer_schema
        audits = pipeline.audits
        if audits is not None and r.teacher is not None and r.task.capture.audit_rate > 0:
            entry["audit"] = audits.agreement(r.task.name).to_json()
        data.append(entry)
    return {"object": "list", "data": data}
