"""The served answer within what the client asked: OpenAI's ``max_tokens`` and ``stop``.

The routing decision is made on the student's whole answer, generated under the task's
own limits (a cut answer would look unsure and cost a teacher call). Whichever answer is
then served, the student's or the teacher's, is fitted here, the same way on both routes
and every endpoint: at most ``max_tokens`` tokens, counted as the student's tokenizer
splits the text (the end token is not one), with ``finish_reason`` ``length`` when that cut
it; the text before the first stop sequence, which is never included, with ``stop``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gateway.engines.base import FinishReason, TokenDelta

__all__ = ["Reply", "ReplyOptions", "fit"]


@dataclass(frozen=True)
class ReplyOptions:
    """How the client wants the served answer: limits, and logprobs to show."""

    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class Reply:
    text: str
    tokens: tuple[TokenDelta, ...] | None  # None: the text is not known in student tokens
    finish_reason: FinishReason


def fit(
    text: str,
    tokens: tuple[TokenDelta, ...] | None,
    finish: FinishReason,
    options: ReplyOptions,
) -> Reply:
    """``text`` (and its ``tokens``, whose texts join to it) cut to ``options``.

    A stop sequence ends the reply if the token that completes it comes within
    ``max_tokens``, as it would have during generation; the token it starts in is kept,
    with its text trimmed, so the logprobs still spell the reply.
    """
    stop_at, stop_end = _first_stop(text, options.stop)
    if tokens is None:
        if stop_at is None:
            return Reply(text, None, finish)
        return Reply(text[:stop_at], None, "stop")
    limit = options.max_tokens
    if stop_at is not None:
        pos, completing = 0, len(tokens)
        for i, token in enumerate(tokens):
            pos += len(token.text)
            if pos >= stop_end:
                completing = i
                break
        if limit is None or completing < limit:
            return Reply(text[:stop_at], _up_to(tokens, stop_at), "stop")
    if limit is not None and len(tokens) > limit:
        kept = tokens[:limit]
        return Reply("".join(t.text for t in kept), kept, "length")
    return Reply(text, tokens, finish)


def _first_stop(text: str, stops: tuple[str, ...]) -> tuple[int | None, int]:
    """Where the earliest stop sequence starts in ``text``, and where it ends."""
    found = [(i, i + len(s)) for s in stops if s and (i := text.find(s)) >= 0]
    if not found:
        return None, 0
    return min(found)


def _up_to(tokens: tuple[TokenDelta, ...], end: int) -> tuple[TokenDelta, ...]:
    kept: list[TokenDelta] = []
    pos = 0
    for token in tokens:
        if pos >= end:
            break
        piece = token.text[: end - pos]
        pos += len(token.text)
        kept.append(token if piece == token.text else dataclasses.replace(token, text=piece))
    return tuple(kept)
