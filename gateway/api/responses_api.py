"""OpenAI's Responses API (``POST /v1/responses``), stateless: its request in, the pipeline's
``Answer`` out as a ``response`` object or the Responses event stream.

The same meaning as chat completions: ``input`` (a string, or messages and input items) and
``instructions`` become the conversation the task's prompt policy reads, ``max_output_tokens``
is a ceiling on the served answer, ``text.format`` follows ``response_format``'s rules, and
``include: ["message.output_text.logprobs"]`` with ``top_logprobs`` shows the served tokens'
log-probabilities. A forced function on a structured task is answered as that function's
call (``tools.py``). Nothing is stored: ``store: true``, ``previous_response_id``,
``conversation`` and ``background`` are clear 400s, as are the features a student cannot
honour (other tools, reasoning, prompt templates, images).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from pydantic import Field, ValidationInfo, field_validator

from gateway.api.completions import headers
from gateway.api.protocol import (
    _Wire,
    check_answer_format,
    client_limit,
    new_id,
    now,
    unsupported,
)
from gateway.api.tools import ToolCall, forced_call
from gateway.engines.base import GenerationRequest, Message, SamplingParams, TokenDelta
from gateway.errors import InvalidRequest
from gateway.keys import ClientKey
from gateway.pipeline.answer import Forced, Pipeline
from gateway.pipeline.base import Answer
from gateway.pipeline.deployment import TaskRuntime
from gateway.pipeline.limits import check_input_chars, check_message_count
from gateway.pipeline.prompt import student_turns
from gateway.pipeline.reply import ReplyOptions
from gateway.tasks import Task

__all__ = ["ResponseRequest", "complete", "stream"]

LOGPROBS = "message.output_text.logprobs"
_ROLES = ("user", "assistant", "system", "developer")


class ResponseRequest(_Wire):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = Field(None, max_length=256)
    text: dict[str, Any] | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    background: bool | None = None
    prompt: Any = None
    reasoning: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    truncation: str | None = None

    @field_validator("store", "background")
    @classmethod
    def _stateless(cls, v: bool | None, info: ValidationInfo) -> bool | None:
        if v:
            raise unsupported(
                str(info.field_name),
                f"{info.field_name}: this gateway keeps no responses; send false or omit it.",
            )
        return v

    @field_validator("previous_response_id", "conversation", "prompt")
    @classmethod
    def _no_server_state(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None:
            raise unsupported(
                str(info.field_name),
                f"{info.field_name}: this gateway is stateless; send the whole conversation "
                "in input.",
            )
        return v

    @field_validator("reasoning")
    @classmethod
    def _no_reasoning(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v and any(value is not None for value in v.values()):
            raise unsupported("reasoning", "reasoning: a task's student does not reason.")
        return v

    @field_validator("include")
    @classmethod
    def _known_includes(cls, v: list[str] | None) -> list[str] | None:
        for index, item in enumerate(v or ()):
            if item != LOGPROBS:
                raise InvalidRequest(
                    f"include {item!r} is not available here; only {LOGPROBS!r} is.",
                    param=f"include.[{index}]",
                    code="unsupported_value",
                )
        return v

    @field_validator("text")
    @classmethod
    def _known_format(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        fmt = (v or {}).get("format") or {"type": "text"}
        kind = fmt.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise InvalidRequest(
                f"text.format type {kind!r} is not one of 'text', 'json_object', 'json_schema'.",
                param="text.format.type",
                code="invalid_value",
            )
        if kind == "json_schema" and not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest(
                "text.format of type 'json_schema' needs schema, an object.",
                param="text.format.schema",
                code="missing_required_parameter",
            )
        return v

    @property
    def format(self) -> dict[str, Any]:
        return (self.text or {}).get("format") or {"type": "text"}

    @property
    def logprobs(self) -> bool:
        return LOGPROBS in (self.include or ())

    def turns(self) -> list[Message]:
        """``instructions`` first, as a system message, then the input's messages."""
        out = [Message("system", self.instructions)] if self.instructions else []
        if isinstance(self.input, str):
            return [*out, Message("user", self.input)]
        for index, item in enumerate(self.input):
            out.append(_message(item, index))
        return out

    def to_sampling(self, task: Task) -> SamplingParams:
        fmt = self.format
        check_answer_format(task, fmt.get("type", "text"), fmt.get("schema"), "text.format")
        temperature = self.temperature
        return SamplingParams(
            max_tokens=task.generation.max_tokens,
            temperature=temperature if temperature is not None else task.generation.temperature,
            top_p=self.top_p if self.top_p is not None else 1.0,
            top_logprobs=(self.top_logprobs or 0) if self.logprobs else 0,
        )

    def reply_options(self, task: Task) -> ReplyOptions:
        limit = client_limit(task, self.max_output_tokens)
        return ReplyOptions(limit, (), self.logprobs, self.top_logprobs or 0)

    def tool_call(self, task: Task) -> ToolCall | None:
        return forced_call(task, self.tools, self.tool_choice, nested=False)


def _message(item: dict[str, Any], index: int) -> Message:
    """One input item: a message (``type`` ``message`` or none), its content a string or
    input/output text parts. Other items (function calls, reasoning, files) are refused."""
    param = f"input.[{index}]"
    kind = item.get("type", "message")
    role = item.get("role")
    if kind != "message" or role not in _ROLES:
        raise InvalidRequest(
            f"input item of type {kind!r} is not supported: send messages with a role of "
            f"{', '.join(_ROLES)}.",
            param=param,
            code="unsupported_value",
        )
    content = item.get("content")
    if isinstance(content, str):
        return Message(role, content)
    if not isinstance(content, list):
        raise InvalidRequest(
            "content must be a string or a list of text parts.",
            param=f"{param}.content",
            code="invalid_type",
        )
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InvalidRequest(
                f"Content parts of type {kind!r} are not supported: this task's student "
                "reads text only.",
                param=f"{param}.content",
                code="unsupported_value",
            )
        texts.append(str(part.get("text", "")))
    return Message(role, "".join(texts))


def _prepare(
    pipeline: Pipeline, body: ResponseRequest, request_id: str
) -> tuple[TaskRuntime, GenerationRequest, ReplyOptions, ToolCall | None]:
    runtime = pipeline.runtime(body.model)
    task = runtime.task
    turns = body.turns()
    if not turns:
        raise InvalidRequest("input must not be empty", param="input", code="empty_array")
    check_message_count(task, len(turns))
    gen = GenerationRequest(
        request_id,
        body.to_sampling(task),
        messages=student_turns(task.prompt, turns),
        max_prompt_tokens=task.limits.max_prompt_tokens,
    )
    check_input_chars(task, gen)
    return runtime, gen, body.reply_options(task), body.tool_call(task)


class _Rendering:
    """One response's ids and echoed settings, rendered whole or as its events: the answer
    as a message, or as the call of the function the client forced."""

    def __init__(
        self, body: ResponseRequest, task: Task, sampling: SamplingParams, call: ToolCall | None
    ) -> None:
        self.body, self.task, self.sampling, self.call = body, task, sampling, call
        self.id, self.created = new_id("resp"), now()
        self.item_id = new_id("fc" if call else "msg")
        self.call_id = new_id("call")

    def response(self, answer: Answer | None) -> dict[str, Any]:
        """The ``response`` object: in progress (no answer yet), completed or incomplete."""
        status, incomplete, output = "in_progress", None, []
        usage: dict[str, Any] | None = None
        if answer is not None:
            cut = answer.finish_reason == "length"
            status = "incomplete" if cut else "completed"
            incomplete = {"reason": "max_output_tokens"} if cut else None
            output = [self.item(answer, status)]
            usage = {
                "input_tokens": answer.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": answer.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            }
        out = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "completed_at": now() if status == "completed" else None,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": self.body.instructions,
            "max_output_tokens": self.body.max_output_tokens,
            "model": self.task.name,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": None,
            "store": False,
            "temperature": self.sampling.temperature,
            "text": {"format": self.body.format},
            "tool_choice": self.body.tool_choice or "auto",
            "tools": [_echo(tool) for tool in self.body.tools or ()],
            "top_logprobs": self.body.top_logprobs or 0,
            "top_p": self.sampling.top_p,
            "truncation": "disabled",
            "metadata": self.body.metadata or {},
        }
        if usage is not None:  # absent while in progress, as OpenAI sends it
            out["usage"] = usage
        if self.body.user is not None:
            out["user"] = self.body.user
        return out

    def item(self, answer: Answer | None, status: str) -> dict[str, Any]:
        if self.call is not None:
            return {
                "id": self.item_id,
                "type": "function_call",
                "status": status,
                "call_id": self.call_id,
                "name": self.call.name,
                "arguments": "" if answer is None else answer.text,
            }
        content = [] if answer is None else [self.part(answer.text, answer.tokens)]
        return {
            "id": self.item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def part(self, text: str, tokens: Sequence[TokenDelta] | None) -> dict[str, Any]:
        logprobs = _logprobs(tokens, with_bytes=True) if self.body.logprobs else []
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


def _echo(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as the response object echoes it (``strict`` and ``parameters``
    always present)."""
    return {"strict": None, "parameters": None, **tool}


def _logprobs(tokens: Sequence[TokenDelta] | None, *, with_bytes: bool) -> list[dict[str, Any]]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        out: dict[str, Any] = {"token": token, "logprob": logprob}
        if with_bytes:
            out["bytes"] = list(token.encode("utf-8"))
        return out

    return [
        {
            **entry(d.token or d.text, d.logprob),
            "top_logprobs": [entry(t.token, t.logprob) for t in d.top_logprobs],
        }
        for d in tokens or ()
    ]


async def complete(
    pipeline: Pipeline,
    body: ResponseRequest,
    request_id: str,
    forced: Forced = None,
    caller: ClientKey | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The whole ``response`` object and its headers."""
    with pipeline.deployment.lease():
        runtime, gen, options, call = _prepare(pipeline, body, request_id)
        answer = await pipeline.answer(runtime, gen, forced=forced, options=options, caller=caller)
    rendering = _Rendering(body, runtime.task, gen.sampling, call)
    return rendering.response(answer), headers(answer, runtime)


async def stream(
    pipeline: Pipeline,
    body: ResponseRequest,
    request_id: str,
    forced: Forced = None,
    caller: ClientKey | None = None,
) -> tuple[AsyncIterator[str], dict[str, str], int]:
    """The Responses event stream, its headers and its total tokens (rate limits)."""
    with pipeline.deployment.lease():
        runtime, gen, options, call = _prepare(pipeline, body, request_id)
        answer = await pipeline.answer(runtime, gen, forced=forced, options=options, caller=caller)
    events = _events(_Rendering(body, runtime.task, gen.sampling, call), answer)
    return events, headers(answer, runtime), answer.prompt_tokens + answer.completion_tokens


async def _events(r: _Rendering, answer: Answer) -> AsyncIterator[str]:
    """OpenAI's order: the response created and in progress, the output item opened (for a
    message, its text part too), one delta per served token (the whole text at once when its
    tokens are not known), the text (or arguments), part and item done, then the response
    completed (or incomplete)."""
    sequence = 0

    def event(kind: str, **data: Any) -> str:
        nonlocal sequence
        payload = {"type": kind, **data, "sequence_number": sequence}
        sequence += 1
        return f"event: {kind}\ndata: {orjson.dumps(payload).decode()}\n\n"

    pieces: Sequence[tuple[str, Sequence[TokenDelta] | None]]
    if answer.tokens is not None:
        pieces = [(t.text, (t,)) for t in answer.tokens]
    else:
        pieces = [(answer.text, None)] if answer.text else []
    yield event("response.created", response=r.response(None))
    yield event("response.in_progress", response=r.response(None))
    yield event("response.output_item.added", output_index=0, item=r.item(None, "in_progress"))
    if r.call is not None:
        where = {"item_id": r.item_id, "output_index": 0}
        for text, _ in pieces:
            yield event("response.function_call_arguments.delta", **where, delta=text)
        done = {"name": r.call.name, "arguments": answer.text}
        yield event("response.function_call_arguments.done", **where, **done)
    else:
        where = {"item_id": r.item_id, "output_index": 0, "content_index": 0}
        yield event("response.content_part.added", **where, part=r.part("", ()))
        for text, tokens in pieces:
            logprobs = _logprobs(tokens, with_bytes=False) if r.body.logprobs else []
            yield event("response.output_text.delta", **where, delta=text, logprobs=logprobs)
        logprobs = _logprobs(answer.tokens, with_bytes=False) if r.body.logprobs else []
        yield event("response.output_text.done", **where, text=answer.text, logprobs=logprobs)
        yield event("response.content_part.done", **where, part=r.part(answer.text, answer.tokens))
    whole = r.response(answer)
    item = whole["output"][0]
    yield event("response.output_item.done", output_index=0, item=item)
    final = "response.completed" if whole["status"] == "completed" else "response.incomplete"
    yield event(final, response=whole)
