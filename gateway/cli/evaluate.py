"""``distillgate evaluate``: replay labelled data through the routing; quality and cost."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from gateway.cli.resolve import task_named
from gateway.cli.student import task_for_student
from gateway.settings import Settings
from gateway.tasks import Task

__all__ = ["evaluate_routing", "run"]


def evaluate_routing(task: Task, data: Path, out: Path, max_tokens: int | None = None) -> None:
    from calibration import load_calibration
    from calibration.plots import quality_cost_figure
    from gateway.commands.evaluate import evaluate
    from gateway.deployment import TaskRuntime
    from gateway.engines.transformers import TransformersEngine
    from gateway.teachers.base import Teacher
    from gateway.teachers.factory import OpenedTeacher, open_teacher
    from gateway.testing.sim import SimulatedAnswers, SimulatedTeacher
    from gateway.training.examples import read_examples

    examples = read_examples(data)
    if task.calibrator is None or not task.calibrator.is_file():
        raise SystemExit(
            f"task {task.name!r}: no calibrator at {task.calibrator}; run `distillgate calibrate`"
        )
    calibration = load_calibration(task.calibrator, student_dir=task.student)

    async def run() -> dict[str, Any]:
        engine = TransformersEngine(task.student, max_batch_size=64, max_waiting=len(examples))
        await engine.start()
        config = task.teacher
        opened: OpenedTeacher | None = None
        teacher: Teacher
        if config is not None and os.environ.get(config.api_key_env):
            opened = await open_teacher(task.name, config, task.answers)
            teacher, label = opened.teacher, opened.label
        else:
            accuracy = config.simulator_accuracy if config else 1.0
            answers = SimulatedAnswers.from_examples(examples, accuracy=accuracy)
            if task.answers:
                answers.answer_set = tuple(task.answers)
            teacher, label = SimulatedTeacher(answers), f"simulator (accuracy {accuracy})"
        try:
            result = await evaluate(
                TaskRuntime(task, engine, calibration, teacher, label),
                examples,
                max_tokens=max_tokens,
            )
        finally:
            await engine.aclose()
            if opened is not None:
                await opened.aclose()
        r = result.report
        fig = quality_cost_figure(
            result.curve_share,
            result.curve_accuracy,
            student=r["student_accuracy"],
            teacher=r["teacher_accuracy"],
            chosen=(r["escalation_rate"], r["routed_accuracy"]),
        )
        fig.savefig(out.with_suffix(".png"), dpi=110)
        return r

    out.parent.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run())
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def run(args: argparse.Namespace, settings: Settings) -> None:
    if args.task:
        task = task_named(settings, args.task)
        if args.calibrator:
            task = task.model_copy(update={"calibrator": args.calibrator})
    else:
        task = task_for_student(args.student, args.calibrator, args.data)
    evaluate_routing(task, args.data, args.out, args.max_tokens)
