"""``distillgate evaluate``: replay labelled data through the routing; quality and cost."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from gateway.cli.resolve import task_named
from gateway.cli.student import task_for_student
from gateway.settings import Settings
from gateway.tasks import Task

__all__ = ["evaluate_routing", "run"]


def evaluate_routing(
    task: Task, data: Path, out: Path, max_tokens: int | None = None, concurrency: int = 64
) -> None:
    """``concurrency``: the replay's clients; the engine batches as many, so no request waits
    in its queue while the task's deadline runs (what a slow student would otherwise hit)."""
    from calibration import load_calibration
    from calibration.plots import quality_cost_figure
    from gateway.api.protocol import chat_request
    from gateway.engines.factory import replay_engine
    from gateway.examples import read_examples
    from gateway.jobs.evaluate import evaluate
    from gateway.judges.factory import open_judge
    from gateway.pipeline.deployment import TaskRuntime
    from gateway.simulator import start_simulator
    from gateway.teachers.factory import open_teacher

    examples = read_examples(data)
    if task.calibrator is None or not task.calibrator.is_file():
        raise SystemExit(
            f"task {task.name!r}: no calibrator at {task.calibrator}; run `distillgate calibrate`"
        )
    calibration = load_calibration(task.calibrator, student_dir=task.student)

    async def run() -> dict[str, Any]:
        engine = replay_engine(task, batch=concurrency)(task.student, len(examples))
        await engine.start()
        opened = await open_teacher(
            task.name, task.teacher, task.answers, known=examples, simulator=start_simulator
        )
        # A free-text task is scored by its judge (a program, or a judge model).
        judge = await open_judge(task, simulator=start_simulator) if task.judge else None
        try:
            result = await evaluate(
                TaskRuntime(task, engine, calibration, opened.teacher, opened.label),
                examples,
                client_request=chat_request,
                max_tokens=max_tokens,
                concurrency=concurrency,
                judge=judge.judge if judge is not None else None,
            )
        finally:
            await engine.aclose()
            await opened.aclose()
            if judge is not None:
                await judge.aclose()
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
    if report["failed"]:
        print(
            f"{sum(report['failed'].values())} of {len(examples)} requests failed "
            f"({report['failed']}) and are left out of the figures"
        )
    print(f"wrote {out} and {out.with_suffix('.png')}")


def run(args: argparse.Namespace, settings: Settings) -> None:
    if args.task:
        task = task_named(settings, args.task)
        if args.calibrator:
            task = task.model_copy(update={"calibrator": args.calibrator})
    else:
        task = task_for_student(args.student, args.calibrator, args.data)
    evaluate_routing(task, args.data, args.out, args.max_tokens, args.concurrency)
