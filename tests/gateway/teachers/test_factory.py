"""The one place a teacher is chosen: the real API when its key is set, otherwise the
labelled simulator of the examples it is given, otherwise a clear start-up error."""

from __future__ import annotations

import asyncio

import pytest

from gateway.engines.base import Message
from gateway.examples import Example
from gateway.simulator import start_simulator
from gateway.tasks import TeacherConfig
from gateway.teachers.anthropic import AnthropicTeacher
from gateway.teachers.base import TeacherRequest
from gateway.teachers.factory import open_teacher
from gateway.teachers.resilience import ResilientTeacher

KNOWN = [
    Example("card_arrival", prompt="where is my card"),
    Example("exchange_rate", prompt="what is the rate"),
]


def _ask(text: str) -> TeacherRequest:
    return TeacherRequest("r1", (Message("user", text),), None, 16)


def test_without_a_key_the_simulator_answers_from_the_examples_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DISTILLGATE_TEST_TEACHER_KEY", raising=False)
    config = TeacherConfig(api_key_env="DISTILLGATE_TEST_TEACHER_KEY", simulator_accuracy=1.0)

    async def run() -> tuple[str, str]:
        opened = await open_teacher("t", config, None, known=KNOWN, simulator=start_simulator)
        try:
            answer = await opened.teacher.complete(_ask("where is my card"))
            return answer.text, opened.label
        finally:
            await opened.aclose()

    text, label = asyncio.run(run())
    assert text == "card_arrival"
    assert label == "simulator (accuracy 1.0, DISTILLGATE_TEST_TEACHER_KEY not set)"


def test_a_task_without_a_teacher_gets_a_perfect_simulator_of_its_examples() -> None:
    async def run() -> tuple[str, str]:
        opened = await open_teacher("t", None, None, known=KNOWN, simulator=start_simulator)
        try:
            return (await opened.teacher.complete(_ask("what is the rate"))).text, opened.label
        finally:
            await opened.aclose()

    text, label = asyncio.run(run())
    assert (text, label) == ("exchange_rate", "simulator (accuracy 1.0, no teacher configured)")


def test_with_the_key_set_the_real_client_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLGATE_TEST_TEACHER_KEY", "sk-test")
    config = TeacherConfig(api_key_env="DISTILLGATE_TEST_TEACHER_KEY", model="claude-x")

    async def run() -> None:
        opened = await open_teacher("t", config, None, known=KNOWN)
        try:
            assert isinstance(opened.teacher, ResilientTeacher)
            assert isinstance(opened.teacher.inner, AnthropicTeacher)
            assert opened.label == "claude-x"
        finally:
            await opened.aclose()

    asyncio.run(run())


def test_no_key_and_nothing_to_simulate_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTILLGATE_TEST_TEACHER_KEY", raising=False)
    config = TeacherConfig(api_key_env="DISTILLGATE_TEST_TEACHER_KEY")
    with pytest.raises(ValueError, match="DISTILLGATE_TEST_TEACHER_KEY"):
        asyncio.run(open_teacher("t", config, None, simulator=start_simulator))


def test_without_a_simulator_handed_in_only_the_real_api_opens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulator is the edge's to start: the teacher factory never imports a web server."""
    monkeypatch.delenv("DISTILLGATE_TEST_TEACHER_KEY", raising=False)
    config = TeacherConfig(api_key_env="DISTILLGATE_TEST_TEACHER_KEY")
    with pytest.raises(ValueError, match=r"needs DISTILLGATE_TEST_TEACHER_KEY$"):
        asyncio.run(open_teacher("t", config, None, known=KNOWN))
