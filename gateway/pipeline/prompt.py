"""The one prompt policy: what of a conversation the student reads.

Serving, ``calibrate``, ``evaluate``, ``student evaluate`` and ``export`` all go through
here, so a student is calibrated and evaluated on exactly the prompts it serves, and the
pairs exported for its next round are the prompts it will read, task system prompt
removed (the policy adds it back).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.errors import InvalidRequest
from gateway.examples import Example
from gateway.tasks import PromptFormat

__all__ = ["example_request", "student_turns", "training_turns"]


def student_turns(policy: PromptFormat, turns: Sequence[Message]) -> tuple[Message, ...]:
    """The turns the student sees: OpenAI's ``developer`` read as ``system``; only the last
    user turn for a ``last_user_message`` task; the task's system prompt first."""
    seen = [Message("system" if m.role == "developer" else m.role, m.content) for m in turns]
    if policy.input == "last_user_message":
        users = [m for m in seen if m.role == "user"]
        if not users:
            raise InvalidRequest("messages must include a user message", param="messages")
        seen = [users[-1]]
    if policy.system:
        seen = [Message("system", policy.system), *seen]
    return tuple(seen)


def training_turns(policy: PromptFormat, turns: Sequence[Message]) -> tuple[Message, ...]:
    """The inverse for export: the student's turns less the task's system prompt, so
    ``student_turns(policy, training_turns(policy, t)) == t`` for turns the policy made."""
    if policy.system and turns and turns[0] == Message("system", policy.system):
        return tuple(turns[1:])
    return tuple(turns)


def example_request(
    policy: PromptFormat, example: Example, request_id: str, sampling: SamplingParams
) -> GenerationRequest:
    """A labelled example as the request serving would build from the same conversation."""
    turns = [Message(m["role"], m["content"]) for m in example.chat()]
    return GenerationRequest(request_id, sampling, messages=student_turns(policy, turns))
