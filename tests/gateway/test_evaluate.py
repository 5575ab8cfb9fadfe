"""The offline replay behind `distillgate evaluate`, on the tiny student."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

import pytest

from calibration import Calibration, student_fingerprint
from gateway.api.protocol import chat_request
from gateway.engines.base import GenerationRequest, TokenDelta
from gateway.engines.transformers import TransformersEngine
from gateway.examples import Example
from gateway.jobs.evaluate import evaluate
from gateway.pipeline.deployment import TaskRuntime
from gateway.simulator import SimulatedAnswers, SimulatedTeacher
from gateway.tasks import Task
from tests.conftest import LABELS


class CountingEngine(TransformersEngine):
    """The real engine, counting the requests it holds at once."""

    now = peak = 0

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            async for delta in super().generate(request):
                yield delta
        finally:
            self.now -= 1


def run(  # type: ignore[no-untyped-def]
    tiny_student,
    accuracy: float,
    calibration: Calibration | None = None,
    max_tokens: int | None = None,
    engine: TransformersEngine | None = None,
    concurrency: int = 64,
) -> dict:  # type: ignore[type-arg]
    async def go() -> dict:  # type: ignore[type-arg]
        nonlocal engine
        engine = engine or TransformersEngine(tiny_student.path)
        await engine.start()
        answers = SimulatedAnswers.from_examples(tiny_student.test, accuracy=accuracy)
        task = Task(name="t", student=tiny_student.path, answers=LABELS)
        try:
            result = await evaluate(
                TaskRuntime(task, engine, calibration, SimulatedTeacher(answers)),
                tiny_student.test,
                client_request=chat_request,
                max_tokens=max_tokens,
                concurrency=concurrency,
            )
        finally:
            await engine.aclose()
        return result.report

    return asyncio.run(go())


def test_an_uncalibrated_task_keeps_every_valid_answer(tiny_student) -> None:  # type: ignore[no-untyped-def]
    report = run(tiny_student, 1.0)
    assert report["teacher_accuracy"] == 1.0 and report["temperature"] is None
    assert report["escalation_rate"] < 0.5
    # Only answers outside the task's labels escalate, all wrong, all put right by the
    # teacher: each escalation adds exactly one right answer to the student's.
    routed = report["student_accuracy"] + report["escalation_rate"]
    assert report["routed_accuracy"] == pytest.approx(routed)


def test_no_gap_to_recover_reports_null_routing_metrics(tiny_student) -> None:  # type: ignore[no-untyped-def]
    report = run(tiny_student, 0.0)
    assert report["teacher_accuracy"] == 0.0
    assert report["apgr"] is None and report["cpt50"] is None and report["cpt80"] is None


def test_a_clients_max_tokens_changes_no_routing_decision(tiny_student) -> None:  # type: ignore[no-untyped-def]
    """The decision is made on the whole answer; max_tokens=1 only cuts what is served."""
    calibration = Calibration(
        temperature=1.0, threshold=0.9, student_fingerprint=student_fingerprint(tiny_student.path)
    )
    free = run(tiny_student, 1.0, calibration)
    cut = run(tiny_student, 1.0, calibration, max_tokens=1)
    assert 0.0 < free["escalation_rate"] < 1.0  # some answers kept, some escalated
    assert cut["escalation_rate"] == free["escalation_rate"]
    assert cut["student_accuracy"] == free["student_accuracy"]
    assert cut["routed_accuracy"] < free["routed_accuracy"]  # the served text was cut


def test_the_replay_holds_no_more_requests_than_its_concurrency(tiny_student) -> None:  # type: ignore[no-untyped-def]
    """A slow student (SmolLM2 on a CPU) must not see its queued requests run out the task's
    deadline: the replay keeps ``concurrency`` in flight, not the whole file."""
    engine = CountingEngine(tiny_student.path)
    run(tiny_student, 1.0, engine=engine, concurrency=3)
    assert len(tiny_student.test) > 3 and engine.peak == 3


def test_a_structured_task_reports_record_exact_match_and_field_scores(tiny_student) -> None:  # type: ignore[no-untyped-def]
    """The tiny student, constrained to {"intent": <label>}: with one field per record, the
    record exact match is that field's precision and recall (every answer parses)."""
    schema = {
        "type": "object",
        "properties": {"intent": {"enum": list(LABELS)}},
        "required": ["intent"],
        "additionalProperties": False,
    }
    examples = [
        Example(answer=json.dumps({"intent": e.answer}), prompt=e.prompt) for e in tiny_student.test
    ]

    async def go() -> dict:  # type: ignore[type-arg]
        engine = TransformersEngine(tiny_student.path)
        await engine.start()
        task = Task(name="t", student=tiny_student.path, answer_schema=schema)
        teacher = SimulatedTeacher(SimulatedAnswers.from_examples(examples, accuracy=1.0))
        try:
            result = await evaluate(
                TaskRuntime(task, engine, None, teacher), examples, client_request=chat_request
            )
        finally:
            await engine.aclose()
        return result.report

    report = asyncio.run(go())
    intent = report["field_scores"]["student"]["fields"]["intent"]
    assert 0.3 < report["student_accuracy"] < 1.0  # it learnt labels, not perfectly
    assert intent["precision"] == intent["recall"] == pytest.approx(report["student_accuracy"])
    assert intent["support"] == len(examples)
    assert report["field_scores"]["routed"]["micro"]["f1"] == pytest.approx(
        report["routed_accuracy"]
    )


class StallingEngine(TransformersEngine):
    """The real engine, with every fourth request stalled past the task's deadline (a busy
    machine). The deadline leaves the others seconds to spare even on a loaded CI machine,
    where an escalation's teacher call cut by it would serve the student's answer instead."""

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        if int(request.request_id.rsplit("-", 1)[1]) % 4 == 0:
            await asyncio.sleep(8.0)
        async for delta in super().generate(request):
            yield delta


def test_a_request_past_its_deadline_is_counted_and_the_replay_goes_on(tiny_student) -> None:  # type: ignore[no-untyped-def]
    from gateway.tasks import RequestLimits

    async def go() -> dict:  # type: ignore[type-arg]
        engine = StallingEngine(tiny_student.path)
        await engine.start()
        answers = SimulatedAnswers.from_examples(tiny_student.test, accuracy=1.0)
        task = Task(
            name="t", student=tiny_student.path, answers=LABELS, limits=RequestLimits(deadline_s=4)
        )
        try:
            result = await evaluate(
                TaskRuntime(task, engine, None, SimulatedTeacher(answers)),
                tiny_student.test,
                client_request=chat_request,
            )
        finally:
            await engine.aclose()
        return result.report

    report = asyncio.run(go())
    stalled = len(range(0, len(tiny_student.test), 4))
    assert report["failed"] == {"request_timeout": stalled}
    assert report["n"] == len(tiny_student.test) - stalled
    assert report["routed_accuracy"] == 1.0  # the figures are the answered requests'
