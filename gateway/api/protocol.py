"""OpenAI wire models: requests in, responses and stream chunks out.

Requests ignore fields they do not know (clients send new ones all the time) but reject,
with a 400 naming the field, the features a student cannot honour: ``n > 1``, tools
other than a forced function (``tools.py``), images and audio. ``to_sampling``
translates wire terms into engine terms.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.answers import fits_schema
from gateway.api.tools import ToolCall, forced_call
from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.errors import InvalidRequest
from gateway.pipeline.prompt import student_turns
from gateway.pipeline.reply import ReplyOptions
from gateway.tasks import Task

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "StreamOptions",
    "check_answer_format",
    "client_limit",
    "invalid_request",
    "new_id",
    "param_path",
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


def param_path(loc: Sequence[Any]) -> str | None:
    """A field's location as OpenAI names it: ``messages.[0].content``."""
    parts = [f"[{x}]" if isinstance(x, int) else str(x) for x in loc if x != "body"]
    return ".".join(parts) or None


def invalid_request(errors: Sequence[Any]) -> InvalidRequest:
    """The first validation error, worded and coded as OpenAI's API words and codes it."""
    first = errors[0]
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return InvalidRequest(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
            "payload."
        )
    # Inside a union pydantic names the member tried (``messages.[0].content.str``).
    loc = [x for x in first.get("loc", ()) if x not in ("str", "list[dict[str,any]]")]
    param = param_path(loc)
    value = first.get("input")
    ctx = first.get("ctx") or {}
    if param is None:
        return InvalidRequest(str(first.get("msg", "invalid request")))
    if kind == "missing":
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if kind == "too_short" and value == []:
        return InvalidRequest(
            f"Invalid '{param}': empty array. Expected an array with minimum length "
            f"{ctx.get('min_length', 1)}, but got an empty array instead.",
            param=param,
            code="empty_array",
        )
    if kind in _BOUNDS:
        side, op = _BOUNDS[kind]
        limit = next((ctx[k] for k in ("ge", "gt", "le", "lt") if k in ctx), "?")
        number = "integer" if isinstance(limit, int) else "decimal"  # the field's kind
        return InvalidRequest(
            f"Invalid '{param}': {number} {side} {'minimum' if side == 'below' else 'maximum'} "
            f"value. Expected a value {op} {limit}, but got {value} instead.",
            param=param,
            code=f"{number}_{side}_{'min' if side == 'below' else 'max'}_value",
        )
    if kind == "literal_error":
        return InvalidRequest(
            f"Invalid value: '{value}'. Supported values are: {ctx.get('expected', '')}.",
            param=param,
            code="invalid_value",
        )
    if kind.endswith(("_type", "_parsing")) or kind in (
        "model_attributes_type",
        "union_tag_invalid",
    ):
        return InvalidRequest(
            f"Invalid type for '{param}': {first.get('msg', 'wrong type')}.",
            param=param,
            code="invalid_type",
        )
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return InvalidRequest(f"Invalid '{param}': {msg}", param=param, code="invalid_value")


_BOUNDS = {
    "greater_than_equal": ("below", ">="),
    "greater_than": ("below", ">"),
    "less_than_equal": ("above", "<="),
    "less_than": ("above", "<"),
}


def unsupported(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


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
                    code="unsupported_value",
                )
            parts.append(TextPart.model_validate(part).text)
        return "".join(parts)


def client_limit(task: Task, max_tokens: int | None) -> int | None:
    """A client's limit is a ceiling, not a demand: many send 256 or 4096 by habit and
    cannot know a task's own limit, which the student never exceeds anyway."""
    if max_tokens is None:
        return None
    return min(max_tokens, task.generation.max_tokens)


def check_answer_format(task: Task, kind: str, schema: dict[str, Any] | None, param: str) -> None:
    """A structured task answers JSON of its own schema, whatever is asked; asking for a
    structure it does not answer in is a 400 rather than a silent plain-text answer. The
    same rule for ``response_format`` (chat) and ``text.format`` (Responses)."""
    if kind == "text":
        return
    own = task.answer_schema
    if own is None:
        raise unsupported(
            param,
            f"{param} {kind!r}: task {task.name!r} answers plain text (it declares no answer "
            "schema); only {'type': 'text'} is accepted.",
        )
    if kind == "json_schema" and not fits_schema(schema or {}, own):
        raise InvalidRequest(
            f"{param} json_schema differs from task {task.name!r}'s answer schema; send that "
            "schema (GET /v1/models/{model} shows it) or {'type': 'json_object'}.",
            param=param,
            code="schema_mismatch",
        )


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
            raise InvalidRequest(
                "n > 1 is not supported; send one request per completion.",
                param="n",
                code="unsupported_value",
            )
        return n

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise InvalidRequest(
                f"Invalid 'stop': array too long. Expected an array with maximum length 4, "
                f"but got an array with length {len(stop)} instead.",
                param="stop",
                code="array_above_max_length",
            )
        return stop

    def _stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def _sampling(self, task: Task, top_logprobs: int) -> SamplingParams:
        """The student's generation: the client's sampling, the task's own limits (the
        client's ``max_tokens`` and ``stop`` apply to the served answer, ``reply.py``)."""
        temperature = (
            self.temperature if self.temperature is not None else task.generation.temperature
        )
        return SamplingParams(
            max_tokens=task.generation.max_tokens,
            temperature=temperature,
            top_p=self.top_p if self.top_p is not None else 1.0,
            seed=self.seed,
            top_logprobs=top_logprobs,
        )


class ChatCompletionRequest(_SamplingFields):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    metadata: dict[str, str] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None

    @field_validator("functions", "function_call")
    @classmethod
    def _no_functions(cls, v: Any, info: ValidationInfo) -> Any:
        if v not in (None, [], "none"):
            raise unsupported(
                str(info.field_name),
                f"{info.field_name} is deprecated and not supported; send tools and "
                "tool_choice (one forced function, on a task with an answer schema).",
            )
        return v

    @field_validator("response_format")
    @classmethod
    def _known_format(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        """Its shape here; whether the task can answer so, in ``to_sampling``."""
        if v is None:
            return v
        kind = v.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise InvalidRequest(
                f"response_format type {kind!r} is not one of 'text', 'json_object', "
                "'json_schema'.",
                param="response_format",
                code="invalid_value",
            )
        spec = v.get("json_schema")
        if kind == "json_schema" and not (
            isinstance(spec, dict) and isinstance(spec.get("schema"), dict)
        ):
            raise InvalidRequest(
                "response_format of type 'json_schema' needs json_schema.schema, an object.",
                param="response_format",
                code="invalid_value",
            )
        return v

    def _check_format(self, task: Task) -> None:
        fmt = self.response_format or {}
        schema = (fmt.get("json_schema") or {}).get("schema")
        check_answer_format(task, fmt.get("type", "text"), schema, "response_format")

    @model_validator(mode="after")
    def _logprobs_pair(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest(
                "top_logprobs requires logprobs to be true.",
                param="top_logprobs",
                code="invalid_value",
            )
        return self

    def to_messages(self, task: Task) -> tuple[Message, ...]:
        """The conversation the student sees, by the task's one prompt policy."""
        turns = [Message(m.role, m.text(i)) for i, m in enumerate(self.messages)]
        return student_turns(task.prompt, turns)

    def to_sampling(self, task: Task) -> SamplingParams:
        self._check_format(task)
        return self._sampling(task, (self.top_logprobs or 0) if self.logprobs else 0)

    def tool_call(self, task: Task) -> ToolCall | None:
        return forced_call(task, self.tools, self.tool_choice, nested=True)

    def reply_options(self, task: Task) -> ReplyOptions:
        if self.max_completion_tokens is not None:
            limit = client_limit(task, self.max_completion_tokens)
        else:
            limit = client_limit(task, self.max_tokens)
        return ReplyOptions(limit, self._stops(), self.logprobs, self.top_logprobs or 0)


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
            raise InvalidRequest(
                "Send exactly one prompt per request.", param="prompt", code="unsupported_value"
            )
        for param, used in (
            ("echo", self.echo),
            ("best_of", (self.best_of or 1) > 1),
            ("suffix", bool(self.suffix)),
        ):
            if used:
                raise unsupported(param, "echo, best_of > 1 and suffix are not supported.")
        return self

    def prompt_text(self) -> str:
        text = self.prompt[0] if isinstance(self.prompt, list) else self.prompt
        if not text:
            raise InvalidRequest("prompt must not be empty", param="prompt")
        return text

    def to_sampling(self, task: Task) -> SamplingParams:
        return self._sampling(task, self.logprobs or 0)

    def reply_options(self, task: Task) -> ReplyOptions:
        limit = client_limit(task, self.max_tokens)
        return ReplyOptions(limit, self._stops(), self.logprobs is not None, self.logprobs or 0)


def chat_request(
    task: Task, wire: dict[str, Any], request_id: str
) -> tuple[GenerationRequest, ReplyOptions]:
    """A chat completion body as serving converts it: for jobs that replay data as clients
    would (``evaluate``), handed to them by the CLI so the jobs need not know the wire."""
    body = ChatCompletionRequest.model_validate(wire)
    gen = GenerationRequest(request_id, body.to_sampling(task), messages=body.to_messages(task))
    return gen, body.reply_options(task)
