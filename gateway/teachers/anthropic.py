"""The Anthropic teacher, through the official ``anthropic`` SDK (Messages API)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import anthropic
from anthropic.types import MessageParam

from gateway.errors import TeacherError, TeacherTimeout
from gateway.teachers.base import TeacherAnswer, TeacherRequest
from gateway.teachers.resilience import RETRYABLE_STATUSES, retry_after_seconds
from gateway.tracing import trace_headers

__all__ = ["AnthropicTeacher"]


def _messages(request: TeacherRequest) -> list[MessageParam]:
    out: list[MessageParam] = []
    for m in request.messages:
        if m.role == "assistant":
            out.append({"role": "assistant", "content": m.content})
        else:
            out.append({"role": "user", "content": m.content})
    return out


# A tool's input is an object; a schema whose root is not one (a union of intents, say) is
# asked for under this one key and taken out of it again.
_WRAP = "answer"


def _answer_tool(schema: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The one tool the teacher must call, and whether the schema was wrapped."""
    wrapped = schema.get("type") != "object"
    input_schema = (
        {"type": "object", "properties": {_WRAP: dict(schema)}, "required": [_WRAP]}
        if wrapped
        else dict(schema)
    )
    tool = {
        "name": "answer",
        "description": "Give the answer, in exactly this structure.",
        "input_schema": input_schema,
    }
    return tool, wrapped


class AnthropicTeacher:
    """SDK retries are off: ``ResilientTeacher`` owns retries, deadline and breaker."""

    def __init__(
        self, *, model: str, api_key: str, base_url: str | None = None, timeout_s: float = 20.0
    ) -> None:
        self.model = model
        self.name = f"anthropic:{model}"
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )

    async def complete(self, request: TeacherRequest) -> TeacherAnswer:
        """A structured task's answer is asked for as the input of one forced tool call
        (Anthropic's way to a schema), returned as compact JSON text."""
        started = time.perf_counter()
        tool, wrapped = _answer_tool(request.json_schema or {})
        structured = request.json_schema is not None
        try:
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=request.max_tokens,
                messages=_messages(request),
                system=request.system if request.system else anthropic.omit,
                stop_sequences=list(request.stop) if request.stop else anthropic.omit,
                tools=[tool] if structured else anthropic.omit,  # type: ignore[list-item]
                tool_choice={"type": "tool", "name": "answer"} if structured else anthropic.omit,
                extra_headers=trace_headers(),  # the request's trace, carried on
            )
        except anthropic.APITimeoutError:
            raise TeacherTimeout(f"{self.name} timed out", retryable=True) from None
        except anthropic.APIStatusError as exc:
            raise TeacherError(
                f"{self.name} answered HTTP {exc.status_code}",
                retryable=exc.status_code in RETRYABLE_STATUSES,
                retry_after=retry_after_seconds(exc.response.headers.get("retry-after")),
            ) from None
        except anthropic.APIConnectionError:
            raise TeacherError(f"{self.name} could not be reached", retryable=True) from None
        except Exception as exc:  # a transport error the SDK let through unwrapped
            raise TeacherError(
                f"{self.name} failed ({type(exc).__name__})", retryable=True
            ) from exc
        if structured:
            calls = [b.input for b in message.content if b.type == "tool_use"]
            value: object = calls[0] if calls else None
            if wrapped and isinstance(value, dict):
                value = value.get(_WRAP)
            text = (
                ""
                if value is None
                else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            )
        else:
            text = "".join(block.text for block in message.content if block.type == "text")
        return TeacherAnswer(
            text=text.strip(),
            model=message.model,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            latency_s=time.perf_counter() - started,
            finish_reason="length" if message.stop_reason == "max_tokens" else "stop",
        )

    async def aclose(self) -> None:
        await self._client.close()
