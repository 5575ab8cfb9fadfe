"""The teacher seam: what escalation needs from any frontier model, and what it returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from gateway.engines.base import FinishReason, Message, TokenDelta

__all__ = ["Teacher", "TeacherAnswer", "TeacherRequest"]


@dataclass(frozen=True)
class TeacherRequest:
    request_id: str
    messages: tuple[Message, ...]  # user/assistant turns; the system prompt goes apart
    system: str | None
    max_tokens: int
    stop: tuple[str, ...] = ()  # the client's stop sequences, honoured by the teacher
    top_logprobs: int | None = None  # None: no logprobs wanted; else that many alternatives
    # A structured task: the answer must be JSON of this schema, asked the provider's way.
    json_schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TeacherAnswer:
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    finish_reason: FinishReason = "stop"  # "length": cut at max_tokens
    tokens: tuple[TokenDelta, ...] | None = None  # its own logprobs, when it gives them


@runtime_checkable
class Teacher(Protocol):
    """One completion per call. Adapters raise only ``TeacherError`` and its subclasses."""

    name: str

    async def complete(self, request: TeacherRequest) -> TeacherAnswer: ...

    async def aclose(self) -> None: ...
