"""Token ids → text, one token at a time, honouring stop strings.

Text is held back while it ends inside a multi-byte character or could still be the
start of a stop string, so a client never receives text that must later be taken back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["IncrementalDetokenizer", "TokenTexts"]


class TokenTexts:
    """A token as logprobs show it (special tokens by name, others as their text), each id
    decoded once, when first met: a response's alternatives repeat the same few ids."""

    def __init__(self, tokenizer: Any) -> None:
        self._decode = tokenizer.decode
        self._texts: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = str(self._decode([token_id], skip_special_tokens=False))
        return text


class IncrementalDetokenizer:
    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._ids: list[int] = []
        self._text = ""
        self._emitted = 0
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return self._text[: self._emitted]

    def push(self, token_id: int) -> str:
        """Add a token; return the text now safe to emit. Sets ``stopped`` on a stop string."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        self._text = self._decode(self._ids)
        if self._text.endswith("\ufffd"):
            return ""
        cut = min((i for s in self._stop if (i := self._text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._text = self._text[:cut]
            return self._take(cut)
        return self._take(len(self._text) - self._held_back())

    def flush(self) -> str:
        """The held-back tail, once generation has ended without a stop string."""
        return "" if self.stopped else self._take(len(self._text))

    def _held_back(self) -> int:
        for k in range(
            min(len(self._text), max((len(s) for s in self._stop), default=1) - 1), 0, -1
        ):
            tail = self._text[-k:]
            if any(s.startswith(tail) for s in self._stop):
                return k
        return 0

    def _take(self, end: int) -> str:
        end = max(end, self._emitted)
        out = self._text[self._emitted : end]
        self._emitted = end
        return out
