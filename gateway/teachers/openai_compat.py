"""A teacher behind any OpenAI-compatible chat endpoint, through httpx."""

from __future__ import annotations

import time
from typing import Any

import httpx

from gateway.engines.base import TokenDelta, TokenLogprob
from gateway.errors import TeacherError, TeacherTimeout
from gateway.teachers.base import TeacherAnswer, TeacherRequest
from gateway.teachers.resilience import RETRYABLE_STATUSES, retry_after_seconds
from gateway.tracing import trace_headers

__all__ = ["OpenAICompatTeacher"]


class OpenAICompatTeacher:
    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 20.0,
        temperature: float = 0.0,
    ) -> None:
        self.model = model
        self.temperature = temperature
        self.name = f"openai:{model}"
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout_s
        )

    async def complete(self, request: TeacherRequest) -> TeacherAnswer:
        messages: list[dict[str, str]] = (
            [{"role": "system", "content": request.system}] if request.system else []
        )
        messages += [{"role": m.role, "content": m.content} for m in request.messages]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": self.temperature,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.json_schema, "strict": True},
            }
        if request.top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
        started = time.perf_counter()
        try:
            response = await self._client.post(
                "chat/completions",
                json=body,
                headers=trace_headers(),  # the request's trace
            )
        except httpx.TimeoutException:
            raise TeacherTimeout(f"{self.name} timed out", retryable=True) from None
        except httpx.TransportError:
            raise TeacherError(f"{self.name} could not be reached", retryable=True) from None
        if response.status_code != 200:
            raise TeacherError(
                f"{self.name} answered HTTP {response.status_code}",
                retryable=response.status_code in RETRYABLE_STATUSES,
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
            )
        try:
            data: dict[str, Any] = response.json()
            choice = data["choices"][0]
            text = str(choice["message"]["content"] or "")
            usage = data.get("usage") or {}
            tokens = _own_logprobs(choice.get("logprobs"), text)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise TeacherError(f"{self.name} sent a malformed completion") from None
        return TeacherAnswer(
            text=text if tokens is not None else text.strip(),
            model=str(data.get("model", self.model)),
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=time.perf_counter() - started,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            tokens=tokens,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _own_logprobs(logprobs: Any, text: str) -> tuple[TokenDelta, ...] | None:
    """The teacher's token logprobs, when it sent them and they spell its answer."""
    entries = (logprobs or {}).get("content")
    if not entries:
        return None
    tokens = tuple(
        TokenDelta(
            token_id=-1,
            text=str(e["token"]),
            token=str(e["token"]),
            logprob=float(e["logprob"]),
            top_logprobs=tuple(
                TokenLogprob(-1, str(t["token"]), float(t["logprob"]))
                for t in e.get("top_logprobs") or ()
            ),
        )
        for e in entries
    )
    return tokens if "".join(t.text for t in tokens) == text else None
