"""The Anthropic teacher, through the official ``anthropic`` SDK (Messages API)."""

from __future__ import annotations

import time

import anthropic
from anthropic.types import MessageParam

from gateway.errors import TeacherError, TeacherTimeout
from gateway.teachers.base import TeacherAnswer, TeacherRequest
from gateway.teachers.resilience import RETRYABLE_STATUSES, retry_after_seconds

__all__ = ["AnthropicTeacher"]


def _messages(request: TeacherRequest) -> list[MessageParam]:
    out: list[MessageParam] = []
    for m in request.messages:
        if m.role == "assistant":
            out.append({"role": "assistant", "content": m.content})
        else:
            out.append({"role": "user", "content": m.content})
    return out


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
        started = time.perf_counter()
        try:
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=request.max_tokens,
                messages=_messages(request),
                system=request.system if request.system else anthropic.omit,
                stop_sequences=list(request.stop) if request.stop else anthropic.omit,
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
