"""The task's limits on what a request may carry, checked before the student runs."""

from __future__ import annotations

from gateway.engines.base import GenerationRequest
from gateway.errors import InvalidRequest
from gateway.tasks import Task

__all__ = ["check_input_chars", "check_message_count"]


def check_message_count(task: Task, count: int) -> None:
    """``count``: the turns the client sent (the prompt policy may show the student fewer);
    checked first, before a long conversation is read."""
    limit = task.limits.max_messages
    if count > limit:
        raise InvalidRequest(
            f"Task {task.name!r} takes at most {limit} messages; the request has {count}.",
            param="messages",
            code="too_many_messages",
        )


def check_input_chars(task: Task, gen: GenerationRequest) -> None:
    limit = task.limits.max_input_chars
    chars = len(gen.prompt) if gen.prompt is not None else sum(len(m.content) for m in gen.messages)
    if chars > limit:
        raise InvalidRequest(
            f"Task {task.name!r} reads at most {limit} characters of input; the request has "
            f"{chars}.",
            param="messages" if gen.messages else "prompt",
            code="context_length_exceeded",
        )
