"""What the teacher is asked: the conversation, the client's system prompt and the task's
allowed answers."""

from __future__ import annotations

from pathlib import Path

from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.pipeline.escalation import teacher_request
from gateway.pipeline.reply import ReplyOptions
from gateway.tasks import Task


def test_the_teacher_prompt_lists_the_allowed_answers() -> None:
    task = Task(name="t", student=Path("s"), answers=("refund", "card_arrival"))
    gen = GenerationRequest(
        "r",
        SamplingParams(max_tokens=8),
        messages=(Message("system", "Be brief."), Message("user", "where is it")),
    )
    request = teacher_request(task, gen)
    assert request.messages == (Message("user", "where is it"),)
    assert request.system is not None
    assert request.system.startswith("Be brief.")
    assert "refund\ncard_arrival" in request.system


def test_a_raw_completion_prompt_becomes_a_user_turn() -> None:
    task = Task(name="t", student=Path("s"))
    request = teacher_request(
        task, GenerationRequest("r", SamplingParams(max_tokens=8), prompt="hello")
    )
    assert request.messages == (Message("user", "hello"),) and request.system is None


def test_the_teacher_is_asked_within_the_clients_limits() -> None:
    task = Task(name="t", student=Path("s"))
    gen = GenerationRequest("r", SamplingParams(max_tokens=8), prompt="hello")
    asked = teacher_request(task, gen, ReplyOptions(max_tokens=3, stop=("_",), logprobs=True))
    assert (asked.max_tokens, asked.stop, asked.top_logprobs) == (3, ("_",), 0)
    roomy = teacher_request(task, gen, ReplyOptions(max_tokens=10_000))
    assert roomy.max_tokens == task.generation.max_tokens  # never above the task's own
    audit = teacher_request(task, gen)  # an audit judges the whole answer
    assert (audit.stop, audit.top_logprobs) == ((), None)
