"""The data path: request → task → student → response.

Routes hand over a parsed wire request; serving resolves the task, turns the request
into a ``GenerationRequest``, runs the task's student and renders the answer, whole or
as a stream of SSE events. Errors raised before the first byte become HTTP errors;
after it they arrive as a final SSE ``error`` event, as OpenAI's streams do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from gateway.api.protocol import ChatCompletionRequest, CompletionRequest, new_id, now
from gateway.api.responses import ChatRenderer, CompletionRenderer, Renderer, usage
from gateway.engines.base import GenerationRequest, StudentEngine, TokenDelta
from gateway.errors import EngineError, GatewayError, UnknownTask, error_body
from gateway.tasks import Task

__all__ = ["Serving", "StreamingAnswer"]

logger = logging.getLogger(__name__)


class StreamingAnswer:
    """An SSE body whose first token has already been generated (so errors came first)."""

    def __init__(
        self,
        first: TokenDelta,
        rest: AsyncGenerator[TokenDelta, None],
        renderer: Renderer,
        envelope: dict[str, Any],
        include_usage: bool,
    ) -> None:
        self._first, self._rest = first, rest
        self._renderer, self._envelope = renderer, envelope
        self._include_usage = include_usage

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {**self._envelope, "object": self._renderer.chunk_name, "choices": choices, **extra}
        if self._include_usage and "usage" not in extra:
            body["usage"] = None
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    async def __aiter__(self) -> AsyncIterator[str]:
        opening = self._renderer.opening()
        if opening is not None:
            yield self._event([opening])
        completion_tokens, delta = 0, self._first
        async with aclosing(self._rest) as rest:
            try:
                while True:
                    completion_tokens += 1
                    yield self._event([self._renderer.piece(delta, delta.finish_reason)])
                    if delta.finish_reason is not None:
                        break
                    delta = await anext(rest)
            except Exception as exc:  # headers are sent: the error travels as an event
                if not isinstance(exc, GatewayError):
                    logger.exception("stream failed after its first byte")
                    exc = EngineError("The stream failed; the request was not completed.")
                body = error_body(exc.message, exc.error_type, code=exc.code)
                yield f"data: {json.dumps(body)}\n\n"
                return
        if self._include_usage:
            yield self._event([], usage=usage(self._first.prompt_tokens, completion_tokens))
        yield "data: [DONE]\n\n"


class Serving:
    def __init__(self, tasks: Mapping[str, Task], engines: Mapping[str, StudentEngine]) -> None:
        self.tasks = tasks
        self.engines = engines  # by task name

    def task(self, name: str) -> Task:
        task = self.tasks.get(name)
        if task is None:
            raise UnknownTask(
                f"The model {name!r} does not exist; see GET /v1/models.", param="model"
            )
        return task

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": t.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "distillgate",
                    "description": t.description,
                }
                for t in self.tasks.values()
            ],
        }

    def _prepare(
        self, body: ChatCompletionRequest | CompletionRequest, request_id: str
    ) -> tuple[Task, GenerationRequest, Renderer]:
        task = self.task(body.model)
        renderer: Renderer
        if isinstance(body, ChatCompletionRequest):
            gen = GenerationRequest(
                request_id, body.to_sampling(task), messages=body.to_messages(task)
            )
            renderer = ChatRenderer(logprobs=body.logprobs)
        else:
            gen = GenerationRequest(request_id, body.to_sampling(task), prompt=body.prompt_text())
            renderer = CompletionRenderer(logprobs=body.logprobs is not None)
        return task, gen, renderer

    def _envelope(self, task: Task, renderer: Renderer) -> dict[str, Any]:
        prefix = "chatcmpl" if isinstance(renderer, ChatRenderer) else "cmpl"
        return {
            "id": new_id(prefix),
            "object": renderer.object_name,
            "created": now(),
            "model": task.name,
        }

    async def complete(
        self, body: ChatCompletionRequest | CompletionRequest, request_id: str
    ) -> dict[str, Any]:
        task, gen, renderer = self._prepare(body, request_id)
        deltas: list[TokenDelta] = []
        async with aclosing(self.engines[task.name].generate(gen)) as stream:
            async for delta in stream:
                deltas.append(delta)
        if not deltas:
            raise EngineError("the student produced no output")
        text = "".join(d.text for d in deltas)
        return {
            **self._envelope(task, renderer),
            "choices": [renderer.full(text, deltas, deltas[-1].finish_reason)],
            "usage": usage(deltas[-1].prompt_tokens, len(deltas)),
        }

    async def stream(
        self, body: ChatCompletionRequest | CompletionRequest, request_id: str
    ) -> StreamingAnswer:
        task, gen, renderer = self._prepare(body, request_id)
        tokens = self.engines[task.name].generate(gen)
        try:
            first = await anext(tokens)
        except BaseException:
            await tokens.aclose()
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        envelope = self._envelope(task, renderer)
        envelope["object"] = renderer.chunk_name
        return StreamingAnswer(first, tokens, renderer, envelope, include_usage)
