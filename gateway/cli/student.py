"""``distillgate student train|build|evaluate``: a from-scratch student, and its exact match."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.cli.resolve import task_named
from gateway.settings import Settings
from gateway.tasks import PromptFormat, Task

__all__ = [
    "answer_budget",
    "build",
    "build_student",
    "evaluate",
    "exact_match",
    "task_for_student",
    "train",
    "train_student_from_files",
]


def train_student_from_files(
    data: Sequence[Path],
    held_out: Path | None,
    out: Path,
    *,
    budget: float,
    max_steps: int | None,
    lowercase: bool | None = None,
    seed: int = 0,
    threads: int | None = None,
    init_from: Path | None = None,
    answers: Sequence[str] = (),
) -> None:
    """Long because it reports progress for a terminal and for a log file."""
    from tqdm import tqdm

    from gateway.training.examples import read_examples, stratified_split
    from gateway.training.trainer import TrainConfig, train_student

    train = [ex for path in data for ex in read_examples(path)]
    if held_out is not None:
        dev = read_examples(held_out)
    else:
        train, dev = stratified_split(train, fraction=0.05, seed=seed)
    cfg = TrainConfig(
        time_budget_s=budget, max_steps=max_steps, lowercase=lowercase, seed=seed, threads=threads
    )
    print(
        f"training a student on {len(train)} examples ({len(dev)} held out), "
        f"budget {budget:.0f}s -> {out}"
    )
    # A terminal gets a live bar; a log file a line every 30 s, not thousands of \r updates.
    terminal = sys.stderr.isatty()
    last_line = [time.monotonic()]
    with tqdm(
        total=1000,
        unit="‰",
        bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
        disable=not terminal,
    ) as bar:

        def progress(fraction: float, stats: dict[str, float]) -> None:
            if not terminal and time.monotonic() - last_line[0] >= 30:
                last_line[0] = time.monotonic()
                print(
                    f"training: {fraction:.0%} of the budget, step {int(stats['step'])}, "
                    f"loss {stats['loss']:.3f}, held-out {max(stats['best'], 0):.3f}",
                    file=sys.stderr,
                    flush=True,
                )
            bar.n = int(fraction * 1000)
            bar.set_postfix(
                step=int(stats["step"]),
                loss=f"{stats['loss']:.3f}",
                held_out=f"{max(stats['best'], 0):.3f}",
                refresh=False,
            )
            bar.refresh()

        result = train_student(
            train, dev, out, cfg, progress=progress, init_from=init_from, answers=answers
        )
    print(
        f"done: {result.steps} steps in {result.seconds:.0f}s, "
        f"{result.parameters / 1e6:.2f}M parameters, "
        f"held-out exact match {result.best_eval_accuracy:.4f}"
    )


def build_student(task: Task) -> None:
    if task.build is None:
        raise SystemExit(
            f"task {task.name!r} has no [build] recipe and no student at {task.student}"
        )
    train_student_from_files(
        [task.build.train],
        task.build.held_out,
        task.student,
        budget=task.build.time_budget_s,
        max_steps=None,
        answers=task.answers or (),
    )


async def exact_match(student: Path, data: Path, task: Task | None) -> dict[str, float]:
    from gateway.engines.transformers import TransformersEngine
    from gateway.jobs.replay import replay
    from gateway.training.examples import read_examples

    examples = read_examples(data)
    engine = TransformersEngine(student, max_batch_size=64, max_waiting=len(examples))
    await engine.start()
    started = time.perf_counter()
    try:
        answers = await replay(
            engine,
            examples,
            max_tokens=task.generation.max_tokens if task else 32,
            prompt=task.prompt if task else PromptFormat(),
        )
    finally:
        await engine.aclose()
    correct = sum(a.text == ex.answer for a, ex in zip(answers, examples, strict=True))
    return {
        "n": len(examples),
        "exact_match": correct / len(examples),
        "seconds": time.perf_counter() - started,
    }


def answer_budget(student: Path, answers: Sequence[str]) -> int:
    """Completion tokens for the longest answer in the data, its end token and some slack."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student)
    return max(len(tok.encode(a, add_special_tokens=False)) for a in answers) + 8


def task_for_student(student: Path, calibrator: Path | None, data: Path) -> Task:
    """An ad-hoc task around a bare student folder: the answer budget, and (for labels) the
    answer set, taken from the data."""
    from gateway.tasks import GenerationLimits
    from gateway.training.examples import read_examples
    from gateway.training.tokenizer import is_closed_answer_set

    answers = [ex.answer for ex in read_examples(data)]
    return Task(
        name=student.name,
        student=student,
        calibrator=calibrator,
        answers=tuple(sorted(set(answers))) if is_closed_answer_set(answers) else None,
        generation=GenerationLimits(max_tokens=answer_budget(student, answers)),
    )


def train(args: argparse.Namespace, settings: Settings) -> None:
    train_student_from_files(
        args.data,
        args.held_out,
        args.out,
        budget=args.time_budget,
        max_steps=args.max_steps,
        lowercase=True if args.lowercase else False if args.no_lowercase else None,
        seed=args.seed,
        threads=args.threads,
        init_from=args.init_from,
        answers=_answers(args, settings),
    )


def _answers(args: argparse.Namespace, settings: Settings) -> tuple[str, ...]:
    if args.answers_file is not None:
        return tuple(json.loads(args.answers_file.read_text()))
    return (task_named(settings, args.task).answers or ()) if args.task else ()


def build(args: argparse.Namespace, settings: Settings) -> None:
    build_student(task_named(settings, args.task))


def evaluate(args: argparse.Namespace, settings: Settings) -> None:
    task = task_named(settings, args.task) if args.task else None
    student = task.student if task else args.student
    print(json.dumps(asyncio.run(exact_match(student, args.data, task)), indent=2))
