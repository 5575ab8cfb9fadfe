"""The offline replay behind `distillgate evaluate`, on the tiny student."""

from __future__ import annotations

import asyncio

from gateway.commands.evaluate import evaluate
from gateway.deployment import TaskRuntime
from gateway.engines.transformers import TransformersEngine
from gateway.tasks import Task
from gateway.teachers.sim import SimulatedAnswers, SimulatedTeacher
from tests.conftest import LABELS


def run(tiny_student, accuracy: float) -> dict:  # type: ignore[no-untyped-def, type-arg]
    async def go() -> dict:  # type: ignore[type-arg]
        engine = TransformersEngine(tiny_student.path)
        await engine.start()
        answers = SimulatedAnswers.from_examples(tiny_student.test, accuracy=accuracy)
        task = Task(name="t", student=tiny_student.path, answers=LABELS)
        try:
            result = await evaluate(
                TaskRuntime(task, engine, None, SimulatedTeacher(answers)), tiny_student.test
            )
        finally:
            await engine.aclose()
        return result.report

    return asyncio.run(go())


def test_an_uncalibrated_task_keeps_every_valid_answer(tiny_student) -> None:  # type: ignore[no-untyped-def]
    report = run(tiny_student, 1.0)
    assert report["teacher_accuracy"] == 1.0 and report["temperature"] is None
    assert report["escalation_rate"] < 0.5  # only invalid answers escalate without a calibrator
    assert 0.5 <= report["apgr"] <= 1.0


def test_no_gap_to_recover_reports_null_routing_metrics(tiny_student) -> None:  # type: ignore[no-untyped-def]
    report = run(tiny_student, 0.0)
    assert report["teacher_accuracy"] == 0.0
    assert report["apgr"] is None and report["cpt50"] is None and report["cpt80"] is None
