"""One prompt policy: the student is calibrated on exactly the token ids it serves."""

from __future__ import annotations

import asyncio

import pytest

from gateway.api.protocol import ChatCompletionRequest
from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.engines.transformers import TransformersEngine
from gateway.errors import InvalidRequest
from gateway.examples import Example
from gateway.jobs.calibrate import score_set
from gateway.jobs.export import to_example
from gateway.pipeline.prompt import example_request, student_turns, training_turns
from gateway.tasks import PromptFormat, Task
from tests.gateway.capture.records import record

SYSTEM = "You sort bank support tickets."
CONVERSATION = (
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello"},
    {"role": "assistant", "content": "How can I help?"},
    {"role": "user", "content": "my card has not arrived yet"},
)
POLICIES = [
    PromptFormat(input="conversation", system=SYSTEM),
    PromptFormat(input="last_user_message", system=SYSTEM),
    PromptFormat(input="conversation"),
    PromptFormat(),
]


def served_request(task: Task, example: Example) -> GenerationRequest:
    """What serving builds for a client sending the example's conversation."""
    body = ChatCompletionRequest.model_validate({"model": task.name, "messages": example.chat()})
    return GenerationRequest("s", body.to_sampling(task), messages=body.to_messages(task))


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.input}-{bool(p.system)}")
def test_calibration_reads_the_token_ids_serving_reads(tiny_student, policy: PromptFormat) -> None:  # type: ignore[no-untyped-def]
    task = Task(name="t", student=tiny_student.path, prompt=policy)
    examples = [Example(answer="card_arrival", messages=CONVERSATION), *tiny_student.test[:3]]
    scored = asyncio.run(score_set(tiny_student.path, examples, max_tokens=8, prompt=policy))
    engine = TransformersEngine(tiny_student.path)
    for example, calibrated in zip(examples, scored.prompt_ids, strict=True):
        assert calibrated == engine.encode(served_request(task, example))
    first = engine.tokenizer.decode(scored.prompt_ids[0]).lower()  # this tokenizer lowercases
    assert (SYSTEM.lower() in first) == bool(policy.system)  # the policy really is applied
    assert ("how can i help?" in first) == (policy.input == "conversation")


def test_the_policy_keeps_what_the_task_says() -> None:
    turns = [Message(m["role"], m["content"]) for m in CONVERSATION]
    last = student_turns(PromptFormat(system=SYSTEM), turns)
    assert last == (Message("system", SYSTEM), Message("user", "my card has not arrived yet"))
    whole = student_turns(PromptFormat(input="conversation"), [Message("developer", "x"), *turns])
    assert whole[0] == Message("system", "x") and len(whole) == 5
    with pytest.raises(InvalidRequest):
        student_turns(PromptFormat(), [Message("system", "only a system turn")])


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.input}-{bool(p.system)}")
def test_an_exported_pair_replays_as_the_prompt_it_was_captured_from(
    tiny_student,  # type: ignore[no-untyped-def]
    policy: PromptFormat,
) -> None:
    task = Task(name="t", student=tiny_student.path, prompt=policy)
    served = served_request(task, Example(answer="x", messages=CONVERSATION)).messages
    captured = record(1, messages=tuple({"role": m.role, "content": m.content} for m in served))
    example = to_example(captured, task)
    replayed = example_request(policy, example, "r", SamplingParams(max_tokens=1))
    assert replayed.messages == served
    assert student_turns(policy, training_turns(policy, served)) == served
