"""A teacher behind any OpenAI-compatible chat endpoint, through httpx."""

from __future__ import annotations

import time
from typing import Any

import httpx

from gateway.errors import TeacherError, TeacherTimeout
from gateway.teachers.base import TeacherAnswer, TeacherRequest

__all__ = ["OpenAICompatTeacher"]

_RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 529}


class OpenAICompatTeacher:
    def __init__(
        self, *, model: str, base_url: str, api_key: str | None = None, timeout_s: float = 20.0
    ) -> None:
        self.model = model
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
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": 0,
        }
        started = time.perf_counter()
        try:
            response = await self._client.post("chat/completions", json=body)
        except httpx.TimeoutException:
            raise TeacherTimeout(f"{self.name} timed out", retryable=True) from None
        except httpx.TransportError:
            raise TeacherError(f"{self.name} could not be reached", retryable=True) from None
        if response.status_code != 200:
            retry_after = response.headers.get("retry-after")
            raise TeacherError(
                f"{self.name} answered HTTP {response.status_code}",
                retryable=response.status_code in _RETRYABLE,
                retry_after=float(retry_after)
                if retry_after and retry_after.replace(".", "", 1).isdigit()
                else None,
            )
        try:
            data: dict[str, Any] = response.json()
            text = data["choices"][0]["message"]["content"] or ""
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            raise TeacherError(f"{self.name} sent a malformed completion") from None
        return TeacherAnswer(
            text=str(text).strip(),
            model=str(data.get("model", self.model)),
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=time.perf_counter() - started,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
