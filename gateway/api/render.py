"""Render a student's answer in OpenAI's shapes: chat or legacy completions, whole or chunked.

The pipeline deals in ``TokenDelta``s; a renderer turns them into the two wire formats so
the adapter (``completions.py``) has no format branches. Responses are plain dicts: they
are built once per request and go straight to JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.engines.base import TokenDelta, TokenLogprob

__all__ = ["ChatRenderer", "CompletionRenderer", "Renderer", "ToolCallRenderer", "usage"]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _chat_logprobs(tokens: Sequence[TokenDelta] | None) -> dict[str, Any]:
    """OpenAI's chat logprobs object; ``None`` tokens (not known in the student's tokens,
    see ``pipeline/escalation.py``) give an empty list rather than a missing object."""
    return {
        "content": [
            {
                **_entry(d.token or d.text, d.logprob),
                "top_logprobs": [_entry(t.token, t.logprob) for t in d.top_logprobs],
            }
            for d in tokens or ()
        ],
        "refusal": None,
    }


def _completion_logprobs(tokens: Sequence[TokenDelta] | None, offset: int = 0) -> dict[str, Any]:
    offsets, pos = [], offset
    for d in tokens or ():
        offsets.append(pos)
        pos += len(d.text)

    def top(ts: tuple[TokenLogprob, ...]) -> dict[str, float]:
        return {t.token: t.logprob for t in ts}

    return {
        "tokens": [d.token or d.text for d in tokens or ()],
        "token_logprobs": [d.logprob for d in tokens or ()],
        "top_logprobs": [top(d.top_logprobs) for d in tokens or ()],
        "text_offset": offsets,
    }


class Renderer(Protocol):
    """One wire format. ``piece`` renders one served token (or, with ``token`` None, a
    text whose tokens are not known); ``closing`` carries the finish reason alone."""

    object_name: str
    chunk_name: str
    chunk_usage: bool  # whether every chunk carries "usage": null when usage is asked for

    def full(
        self, text: str, tokens: Sequence[TokenDelta] | None, finish: str
    ) -> dict[str, Any]: ...

    def opening(self) -> dict[str, Any] | None: ...

    def piece(self, text: str, token: TokenDelta | None) -> dict[str, Any]: ...

    def closing(self, finish: str) -> dict[str, Any]: ...


@dataclass
class ChatRenderer:
    logprobs: bool
    object_name: str = "chat.completion"
    chunk_name: str = "chat.completion.chunk"
    chunk_usage: bool = True

    def full(self, text: str, tokens: Sequence[TokenDelta] | None, finish: str) -> dict[str, Any]:
        return {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": _chat_logprobs(tokens) if self.logprobs else None,
            "finish_reason": finish,
        }

    def opening(self) -> dict[str, Any] | None:
        return {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }

    def piece(self, text: str, token: TokenDelta | None) -> dict[str, Any]:
        logprobs = None
        if self.logprobs:
            logprobs = _chat_logprobs([token] if token is not None else None)
        return {"index": 0, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": None}

    def closing(self, finish: str) -> dict[str, Any]:
        return {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}


@dataclass
class ToolCallRenderer(ChatRenderer):
    """A structured answer as the call of the function the client forced (``tools.py``):
    the task's record is the call's arguments, streamed as tool-call deltas."""

    function: str = ""
    call_id: str = ""

    def full(self, text: str, tokens: Sequence[TokenDelta] | None, finish: str) -> dict[str, Any]:
        call = {"id": self.call_id, "type": "function", "function": self._function(text)}
        return {
            **super().full(text, tokens, _finish(finish)),
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [call],
            },
        }

    def opening(self) -> dict[str, Any] | None:
        call = {"index": 0, "id": self.call_id, "type": "function", "function": self._function("")}
        return {
            "index": 0,
            "delta": {"role": "assistant", "content": None, "tool_calls": [call]},
            "logprobs": None,
            "finish_reason": None,
        }

    def piece(self, text: str, token: TokenDelta | None) -> dict[str, Any]:
        arguments = {"index": 0, "function": {"arguments": text}}
        return {**super().piece(text, token), "delta": {"tool_calls": [arguments]}}

    def closing(self, finish: str) -> dict[str, Any]:
        return super().closing(_finish(finish))

    def _function(self, arguments: str) -> dict[str, str]:
        return {"name": self.function, "arguments": arguments}


def _finish(finish: str) -> str:
    """A whole answer ends a call as OpenAI ends one; one cut short stays ``length``."""
    return "tool_calls" if finish == "stop" else finish


@dataclass
class CompletionRenderer:
    logprobs: bool
    object_name: str = "text_completion"
    chunk_name: str = "text_completion"
    chunk_usage: bool = False  # OpenAI's legacy chunks have no usage key
    _offset: int = 0

    def full(self, text: str, tokens: Sequence[TokenDelta] | None, finish: str) -> dict[str, Any]:
        return {
            "index": 0,
            "text": text,
            "logprobs": _completion_logprobs(tokens) if self.logprobs else None,
            "finish_reason": finish,
        }

    def opening(self) -> dict[str, Any] | None:
        return None

    def piece(self, text: str, token: TokenDelta | None) -> dict[str, Any]:
        logprobs = None
        if self.logprobs:
            logprobs = _completion_logprobs([token] if token else None, self._offset)
        self._offset += len(text)
        return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": None}

    def closing(self, finish: str) -> dict[str, Any]:
        return {"index": 0, "text": "", "logprobs": None, "finish_reason": finish}
