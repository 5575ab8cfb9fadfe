"""``distillgate calibrate``: fit a task's (or a bare student's) temperature and threshold."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calibration import RoutingGoal
from gateway.answers import AnswerCheck
from gateway.cli.resolve import redis_client, task_named
from gateway.cli.student import answer_budget
from gateway.engines.factory import ReplayEngine, replay_engine
from gateway.examples import Example
from gateway.pipeline.decision import routing_goal
from gateway.settings import Settings
from gateway.tasks import PromptFormat, RoutingPolicy, Task, default_calibrator

__all__ = ["calibrate_student", "calibrate_task", "run", "stream_examples"]


def calibrate_student(
    student: Path,
    examples: Sequence[Example],
    out: Path,
    *,
    goal: RoutingGoal,
    max_tokens: int,
    prompt: PromptFormat,
    check: AnswerCheck | None = None,
    engine: ReplayEngine | None = None,
    judged_by: Task | None = None,
) -> None:
    """``engine``: how the student is opened (default the embedded engine); ``judged_by``: a
    free-text task, whose judge decides which of the student's answers are right. Long
    because it prints the report a person reads: metrics before and after, the threshold
    and its guarantee."""
    from tqdm import tqdm

    from calibration import LogisticCalibrator, save_calibration
    from calibration.plots import reliability_figure, risk_coverage_figure
    from gateway.jobs.calibrate import (
        fit_calibration,
        score_set,
        sequence_confidence,
        text_confidence,
    )

    with tqdm(total=3, desc="calibrate", bar_format="{l_bar}{bar}| {n}/{total} {postfix}") as bar:
        bar.set_postfix_str(f"replaying {len(examples)} examples through the student")
        scored = asyncio.run(
            score_set(
                student,
                examples,
                max_tokens=max_tokens,
                prompt=prompt,
                check=check,
                engine=engine,
            )
        )
        if judged_by is not None:
            bar.set_postfix_str("judging the student's answers")
            scored = asyncio.run(_judged(scored, judged_by))
        bar.update()
        bar.set_postfix_str("fitting temperature and threshold")
        calibration, held = fit_calibration(scored, student, goal=goal)
        bar.update()
        bar.set_postfix_str("writing artifact and plots")
        save_calibration(calibration, out)
        curves = {"before (T = 1)": sequence_confidence(held.greedy, 1.0)}
        if calibration.logistic is not None:
            model = LogisticCalibrator.from_json(calibration.logistic)
            curves["after (logistic, text features)"] = text_confidence(model, held.greedy)
        else:
            curves[f"after (T = {calibration.temperature:.2f})"] = sequence_confidence(
                held.greedy, calibration.temperature
            )
        stem = out.with_suffix("")
        reliability_figure(held.correct, curves).savefig(f"{stem}.reliability.png", dpi=110)
        coverage = calibration.metrics_after.get("coverage")
        risk_coverage_figure(held.correct, curves, threshold_coverage=coverage).savefig(
            f"{stem}.risk_coverage.png", dpi=110
        )
        bar.update()
    before, after = calibration.metrics_before, calibration.metrics_after
    n_t, n_s = calibration.n_temperature, calibration.n_threshold
    sizes = f"n = {n_s}, disjoint from the {n_t} that fitted T"
    print(f"\n{'metric':<12} {'before':>10} {'after':>10}   ({sizes})")
    for key in ("accuracy", "ece", "mce", "brier", "nll", "aurc", "token_nll"):
        print(f"{key:<12} {before[key]:>10.4f} {after[key]:>10.4f}")
    asked = (
        f"target accepted accuracy {calibration.target_accuracy} (delta {calibration.delta})"
        if calibration.target_accuracy is not None
        else f"escalate at most {calibration.max_escalation}"
    )
    warning = "" if calibration.certified else " -- NOT CERTIFIED: everything escalates"
    if "nll_text" in after:
        print(
            f"\nfree text, right = the judge accepts: logistic on text features held-out NLL "
            f"{after['nll_text']:.4f}, temperature {after['nll_sequence']:.4f}: "
            f"{calibration.method}"
        )
    print(
        f"\ntemperature {calibration.temperature:.4f}; "
        f"threshold {calibration.threshold:.4f} for {asked}: "
        f"accepts {after['coverage']:.1%} with accuracy {after['accepted_accuracy']:.4f} "
        f"(error bound {calibration.error_bound:.4f}){warning}"
    )
    print(f"wrote {out}, {stem}.reliability.png and {stem}.risk_coverage.png")


async def _judged(scored: Any, task: Task) -> Any:
    """``scored`` with the task's judge's verdicts on the student's own answers."""
    from gateway.jobs.judged import judged
    from gateway.judges.factory import open_judge
    from gateway.judges.verdicts import Verdicts
    from gateway.simulator import start_simulator

    opened = await open_judge(task, simulator=start_simulator)
    try:
        verdicts = Verdicts(opened.judge, opened.rubric)
        scored = await judged(scored, verdicts)
    finally:
        await opened.aclose()
    if verdicts.failures:
        print(f"the judge failed on {verdicts.failures} answers (counted as not acceptable)")
    return scored


def calibrate_task(task: Task, data: Path | None = None) -> None:
    data = data or task.routing.calibration_data
    if data is None:
        raise SystemExit(
            f"task {task.name!r}: give --data (the task has no routing.calibration_data)"
        )
    from gateway.examples import read_examples

    _calibrate_for(task, read_examples(data))


def _calibrate_for(task: Task, examples: Sequence[Example]) -> None:
    """``task``'s student on ``examples``, by the task's target, limits and prompt policy."""
    calibrate_student(
        task.student,
        examples,
        task.calibrator_path,
        goal=routing_goal(task.routing),
        max_tokens=task.generation.max_tokens,
        prompt=task.prompt,
        check=task.answer_check,
        engine=replay_engine(task),
        judged_by=task if task.judge is not None else None,
    )


def run(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.examples import read_examples

    goal_given = args.target_accuracy is not None or args.max_escalation is not None
    if args.task:
        task = task_named(settings, args.task)
        routing = task.routing
        if goal_given:
            routing = routing.model_copy(
                update={
                    "target_accuracy": args.target_accuracy,
                    "max_escalation": args.max_escalation,
                }
            )
        if args.delta is not None:
            routing = routing.model_copy(update={"delta": args.delta})
        updates: dict[str, Any] = {"routing": routing}
        if args.student:
            updates["student"] = args.student
        if args.out:
            updates["calibrator"] = args.out
        task = task.model_copy(update=updates)
        if not args.from_stream:
            calibrate_task(task, args.data)
            return
        examples = stream_examples(task, settings)
        if args.data:
            examples += read_examples(args.data)
        _calibrate_for(task, examples)
        return
    if args.student is None or args.data is None or args.from_stream:
        raise SystemExit("give --task, or --student with --data (--from-stream needs --task)")
    budget = args.max_tokens or answer_budget(
        args.student, [e.answer for e in read_examples(args.data)]
    )
    calibrate_student(
        args.student,
        read_examples(args.data),
        args.out or default_calibrator(args.student),
        # without a task, the goal asked for, else a task's default
        goal=routing_goal(
            RoutingPolicy(
                target_accuracy=args.target_accuracy,
                max_escalation=args.max_escalation,
                delta=args.delta or RoutingPolicy().delta,
            )
        ),
        max_tokens=budget,
        prompt=PromptFormat(),
    )


def stream_examples(task: Task, settings: Settings) -> list[Example]:
    """The holdout share of the captured pairs that pass export's quality gates."""
    from gateway.jobs.export import (
        drop_reason,
        is_held_out,
        normalise_prompt,
        stream_records,
        to_example,
    )

    examples: dict[str, Example] = {}
    counts = {"teacher": 0, "audit": 0}
    for record in stream_records(redis_client(settings), task):
        if drop_reason(record, task) is not None:
            continue
        example = to_example(record, task)
        key = normalise_prompt(example.chat()[-1]["content"])
        if key in examples or not is_held_out(key, task.capture.holdout_share):
            continue
        examples[key] = example
        counts[record.route] = counts.get(record.route, 0) + 1
    print(
        f"from the stream: {len(examples)} held-out pairs "
        f"({counts['teacher']} escalations, {counts['audit']} audits)"
    )
    return list(examples.values())
