"""Render a student's answer in OpenAI's shapes: chat or legacy completions, whole or chunked.

Serving deals in ``TokenDelta``s; a renderer turns them into the two wire formats so
serving has no format branches. Responses are plain dicts: they are built once per
request and go straight to JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.engines.base import TokenDelta, TokenLogprob

__all__ = ["ChatRenderer", "CompletionRenderer", "Renderer", "usage"]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _chat_logprobs(deltas: Sequence[TokenDelta]) -> dict[str, Any]:
    return {
        "content": [
            {
                **_entry(d.token, d.logprob),
                "top_logprobs": [_entry(t.token, t.logprob) for t in d.top_logprobs],
            }
            for d in deltas
        ]
    }


def _completion_logprobs(deltas: Sequence[TokenDelta], offset: int = 0) -> dict[str, Any]:
    offsets, pos = [], offset
    for d in deltas:
        offsets.append(pos)
        pos += len(d.text)

    def top(ts: tuple[TokenLogprob, ...]) -> dict[str, float]:
        return {t.token: t.logprob for t in ts}

    return {
        "tokens": [d.token for d in deltas],
        "token_logprobs": [d.logprob for d in deltas],
        "top_logprobs": [top(d.top_logprobs) for d in deltas],
        "text_offset": offsets,
    }


class Renderer(Protocol):
    object_name: str
    chunk_name: str

    def full(
        self, text: str, deltas: Sequence[TokenDelta], finish: str | None
    ) -> dict[str, Any]: ...

    def opening(self) -> dict[str, Any] | None: ...

    def piece(self, delta: TokenDelta, finish: str | None) -> dict[str, Any]: ...


@dataclass
class ChatRenderer:
    logprobs: bool
    object_name: str = "chat.completion"
    chunk_name: str = "chat.completion.chunk"

    def full(self, text: str, deltas: Sequence[TokenDelta], finish: str | None) -> dict[str, Any]:
        return {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": _chat_logprobs(deltas) if self.logprobs else None,
            "finish_reason": finish,
        }

    def opening(self) -> dict[str, Any] | None:
        return {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }

    def piece(self, delta: TokenDelta, finish: str | None) -> dict[str, Any]:
        return {
            "index": 0,
            "delta": {"content": delta.text} if delta.text or not finish else {},
            "logprobs": _chat_logprobs([delta]) if self.logprobs else None,
            "finish_reason": finish,
        }


@dataclass
class CompletionRenderer:
    logprobs: bool
    object_name: str = "text_completion"
    chunk_name: str = "text_completion"
    _offset: int = 0

    def full(self, text: str, deltas: Sequence[TokenDelta], finish: str | None) -> dict[str, Any]:
        return {
            "index": 0,
            "text": text,
            "logprobs": _completion_logprobs(deltas) if self.logprobs else None,
            "finish_reason": finish,
        }

    def opening(self) -> dict[str, Any] | None:
        return None

    def piece(self, delta: TokenDelta, finish: str | None) -> dict[str, Any]:
        out = {
            "index": 0,
            "text": delta.text,
            "logprobs": _completion_logprobs([delta], self._offset) if self.logprobs else None,
            "finish_reason": finish,
        }
        self._offset += len(delta.text)
        return out
