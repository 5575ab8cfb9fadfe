"""OpenAI wire models: requests in, responses and stream chunks out.

Requests ignore fields they do not know (clients send new ones all the time) but reject,
with a 400 naming the field, the features a student cannot honour: ``n > 1``, tools,
images and audio. ``to_sampling`` translates wire terms into engine terms.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.engines.base import Message, SamplingParams
from gateway.errors import InvalidRequest
from gateway.tasks import Task

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "StreamOptions",
    "invalid_request",
    "new_id",
    "parse_body",
]

W = TypeVar("W", bound="_Wire")


_ids = random.Random()  # seeded from os.urandom once


def new_id(prefix: str) -> str:
    """A unique, unguessable-enough opaque id (128 random bits). Not uuid4: that is a
    syscall per id, where the event loop gives up the GIL to the engine thread."""
    return f"{prefix}-{_ids.getrandbits(128):032x}"


def now() -> int:
    return int(time.time())


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


def parse_body(model: type[W], body: bytes) -> W:
    """Bytes to a wire model in one pass (pydantic-core parses and validates the JSON
    together, without an intermediate dict); a bad body is a 400 naming the field."""
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as exc:
        raise invalid_request(exc.errors(include_url=False)) from None


def invalid_request(errors: Sequence[Any]) -> InvalidRequest:
    """The first validation error, as OpenAI words it (``param: message``)."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        return InvalidRequest("We could not parse the JSON body of your request.")
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    param = ".".join(loc) or None
    return InvalidRequest(f"{param}: {msg}" if param else msg, param=param)


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            kind = part.get("type")
            if kind != "text":
                raise InvalidRequest(
                    f"Content parts of type {kind!r} are not supported: this task's student "
                    "reads text only.",
                    param=f"messages.[{index}].content",
                )
            parts.append(TextPart.model_validate(part).text)
        return "".join(parts)


class StreamOptions(_Wire):
    include_usage: bool = False


class _SamplingFields(_Wire):
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(None, max_length=256)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n is not None and n > 1:
            raise ValueError("n > 1 is not supported; send one request per completion")
        return n

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("stop takes at most 4 sequences")
        return stop

    def _sampling(self, task: Task, max_tokens: int | None, top_logprobs: int) -> SamplingParams:
        limit = task.generation.max_tokens
        if max_tokens is not None and max_tokens > limit:
            raise InvalidRequest(
                f"max_tokens is too large: {max_tokens}. Task {task.name!r} allows at most "
                f"{limit} completion tokens.",
                param="max_tokens",
            )
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        temperature = (
            self.temperature if self.temperature is not None else task.generation.temperature
        )
        return SamplingParams(
            max_tokens=max_tokens or limit,
            temperature=temperature,
            top_p=self.top_p if self.top_p is not None else 1.0,
            seed=self.seed,
            stop=stop,
            top_logprobs=top_logprobs,
        )


class ChatCompletionRequest(_SamplingFields):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    metadata: dict[str, str] | None = None
    tools: list[dict[str, Any]] | None = None
    functions: list[dict[str, Any]] | None = None
    tool_choice: Any = None

    @field_validator("tools", "functions", "tool_choice")
    @classmethod
    def _no_tools(cls, v: Any) -> Any:
        if v not in (None, [], "none"):
            raise ValueError("tools and function calling are not supported by this gateway")
        return v

    @model_validator(mode="after")
    def _logprobs_pair(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs: true")
        return self

    def to_messages(self, task: Task) -> tuple[Message, ...]:
        """The conversation the student sees, per the task's prompt format."""
        turns = [
            Message("system" if m.role == "developer" else m.role, m.text(i))
            for i, m in enumerate(self.messages)
        ]
        if task.prompt.input == "last_user_message":
            users = [m for m in turns if m.role == "user"]
            if not users:
                raise InvalidRequest("messages must include a user message", param="messages")
            turns = [users[-1]]
        if task.prompt.system:
            turns = [Message("system", task.prompt.system), *turns]
        return tuple(turns)

    def to_sampling(self, task: Task) -> SamplingParams:
        max_tokens = self.max_completion_tokens or self.max_tokens
        return self._sampling(task, max_tokens, (self.top_logprobs or 0) if self.logprobs else 0)


class CompletionRequest(_SamplingFields):
    model: str
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    @model_validator(mode="after")
    def _single_prompt(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("send exactly one prompt per request")
        if self.echo or (self.best_of or 1) > 1 or self.suffix:
            raise ValueError("echo, best_of > 1 and suffix are not supported")
        return self

    def prompt_text(self) -> str:
        text = self.prompt[0] if isinstance(self.prompt, list) else self.prompt
        if not text:
            raise InvalidRequest("prompt must not be empty", param="prompt")
        return text

    def to_sampling(self, task: Task) -> SamplingParams:
        return self._sampling(task, self.max_tokens, self.logprobs or 0)
