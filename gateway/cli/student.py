"""``distillgate student train|build|evaluate|import-gguf``: a student from scratch or
fine-tuned from a pretrained base, its exact match, and a GGUF base made a model folder."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gateway.answers import AnswerCheck
from gateway.cli.resolve import task_named
from gateway.settings import Settings
from gateway.tasks import BuildRecipe, PromptFormat, Task

if TYPE_CHECKING:
    from gateway.engines.placeholders import Placeholders
    from gateway.examples import Example
    from gateway.training.finetune import FinetuneConfig

__all__ = [
    "answer_budget",
    "build",
    "build_student",
    "evaluate",
    "exact_match",
    "finetune_from_files",
    "import_gguf",
    "task_for_student",
    "train",
    "train_student_from_files",
]

# A judged free-text task's input (a meaning representation, a record) is what the answer
# must say, word for word: dropping a word while the answer keeps it would teach the student
# to say what its input does not.
FREE_TEXT_WORD_DROPOUT = 0.0


@contextlib.contextmanager
def _progress_report() -> Iterator[Callable[[float, dict[str, float]], None]]:
    """A live bar on a terminal; a line every 30 s in a log file, not thousands of \r."""
    from tqdm import tqdm

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

        yield progress


def _read_data(
    data: Sequence[Path], held_out: Path | None, seed: int, placeholders: Placeholders | None
) -> tuple[list[Example], list[Example]]:
    """The pairs, masked as the student will read and write them when it has placeholders."""
    from gateway.examples import read_examples, stratified_split

    train = [ex for path in data for ex in read_examples(path)]
    if held_out is not None:
        dev = read_examples(held_out)
    else:
        train, dev = stratified_split(train, fraction=0.05, seed=seed)
    if placeholders is None:
        return train, dev
    return [placeholders.mask_example(e) for e in train], [
        placeholders.mask_example(e) for e in dev
    ]


def _placeholders(configured: dict[str, str], parent: Path | None) -> Placeholders | None:
    """The task's placeholders; else those of the student training continues from."""
    from gateway.engines.placeholders import Placeholders, read_placeholders

    if configured:
        return Placeholders(configured)
    return read_placeholders(parent) if parent is not None else None


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
    select_by: Literal["exact_match", "token_accuracy"] = "exact_match",
    placeholders: Placeholders | None = None,
    word_dropout: float | None = None,
) -> None:
    """The from-scratch student (the CPU default); ``word_dropout``: None, the recipe's."""
    from gateway.training.trainer import TrainConfig, train_student

    train, dev = _read_data(data, held_out, seed, placeholders)
    cfg = TrainConfig(
        time_budget_s=budget,
        max_steps=max_steps,
        eval_every_steps=max(1, max_steps // 20) if max_steps else None,
        lowercase=lowercase,
        seed=seed,
        threads=threads,
        select_by=select_by,
    )
    if word_dropout is not None:
        cfg = dataclasses.replace(cfg, word_dropout=word_dropout)
    work = f"{max_steps} steps, at most {budget:.0f}s" if max_steps else f"budget {budget:.0f}s"
    print(f"training a student on {len(train)} examples ({len(dev)} held out), {work} -> {out}")
    with _progress_report() as progress:
        result = train_student(
            train, dev, out, cfg, progress=progress, init_from=init_from, answers=answers
        )
    if placeholders is not None:
        placeholders.save(out)
    print(
        f"done: {result.steps} steps in {result.seconds:.0f}s, "
        f"{result.parameters / 1e6:.2f}M parameters, "
        f"held-out {select_by.replace('_', ' ')} {result.best_eval_accuracy:.4f}"
    )
    if result.cut_short:
        print(
            f"cut short: the {budget:.0f}s cap ended training at step {result.steps} of "
            f"{max_steps} (the machine was busier than the cap allows for); the schedule was "
            "compressed to fit, and the student may be weaker than the recipe's"
        )


def finetune_from_files(
    base: Path,
    data: Sequence[Path],
    held_out: Path | None,
    out: Path,
    cfg: FinetuneConfig,
    *,
    policy: PromptFormat | None = None,
    init_from: Path | None = None,
    placeholders: Placeholders | None = None,
) -> None:
    """A pretrained base fine-tuned (LoRA or every weight) on the same data."""
    from gateway.training.finetune import finetune

    train, dev = _read_data(data, held_out, cfg.seed, placeholders)
    print(
        f"fine-tuning {base} ({cfg.method}) on {len(train)} examples "
        f"({min(len(dev), cfg.eval_limit)} held out), budget {cfg.time_budget_s:.0f}s -> {out}"
    )
    with _progress_report() as progress:
        result = finetune(
            base, train, dev, out, cfg, policy=policy, init_from=init_from, progress=progress
        )
    if placeholders is not None:
        placeholders.save(out)
    print(
        f"done: {result.steps} steps in {result.seconds:.0f}s, "
        f"{result.trainable / 1e6:.2f}M of {result.parameters / 1e6:.1f}M parameters trained, "
        f"held-out loss {result.first_eval_loss:.3f} -> {result.best_eval_loss:.3f}, "
        f"exact match {result.best_eval_accuracy:.4f}"
    )


def build_student(task: Task) -> None:
    if task.build is None:
        raise SystemExit(
            f"task {task.name!r} has no [build] recipe and no student at {task.student}"
        )
    if task.build.base is not None:
        finetune_from_files(
            task.build.base,
            [task.build.train],
            task.build.held_out,
            task.student,
            _recipe_config(task.build),
            policy=task.prompt,
            placeholders=_placeholders(task.prompt.placeholders, None),
        )
        return
    train_student_from_files(
        [task.build.train],
        task.build.held_out,
        task.student,
        budget=task.build.time_budget_s,
        max_steps=task.build.max_steps,
        answers=task.answers or (),
        select_by="token_accuracy" if task.judge is not None else "exact_match",
        placeholders=_placeholders(task.prompt.placeholders, None),
        word_dropout=FREE_TEXT_WORD_DROPOUT if task.judge is not None else None,
    )


async def exact_match(student: Path, data: Path, task: Task | None) -> dict[str, float]:
    from gateway.engines.factory import replay_engine
    from gateway.examples import read_examples
    from gateway.jobs.replay import replay

    examples = read_examples(data)
    engine = replay_engine(task)(student, len(examples))
    await engine.start()
    started = time.perf_counter()
    try:
        answers = await replay(
            engine,
            examples,
            max_tokens=task.generation.max_tokens if task else 32,
            prompt=task.prompt if task else PromptFormat(),
            json_schema=task.answer_check.schema_json if task else None,
        )
    finally:
        await engine.aclose()
    same = (task.answer_check if task else AnswerCheck()).same
    correct = sum(same(a.text, ex.answer) for a, ex in zip(answers, examples, strict=True))
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
    from gateway.examples import read_examples
    from gateway.tasks import GenerationLimits
    from gateway.training.tokenizer import is_closed_answer_set

    answers = [ex.answer for ex in read_examples(data)]
    return Task(
        name=student.name,
        student=student,
        calibrator=calibrator,
        answers=tuple(sorted(set(answers))) if is_closed_answer_set(answers) else None,
        generation=GenerationLimits(max_tokens=answer_budget(student, answers)),
    )


def _recipe_config(recipe: BuildRecipe) -> FinetuneConfig:
    from gateway.training.finetune import FinetuneConfig

    return FinetuneConfig(
        method=recipe.method,
        lora_rank=recipe.lora_rank,
        lora_alpha=2 * recipe.lora_rank,
        lr=recipe.lr,
        time_budget_s=recipe.time_budget_s,
        max_steps=recipe.max_steps,
    )


def train(args: argparse.Namespace, settings: Settings) -> None:
    task = task_named(settings, args.task) if args.task else None
    configured = dict(args.placeholder) or (task.prompt.placeholders if task else {})
    placeholders = _placeholders(configured, args.init_from)
    if args.base is not None:
        from gateway.training.finetune import FinetuneConfig

        cfg = FinetuneConfig(
            method=args.method,
            lora_rank=args.lora_rank,
            lora_alpha=args.lora_alpha or 2 * args.lora_rank,
            lora_dropout=args.lora_dropout,
            target_modules=args.target_modules,
            lr=args.lr,
            batch_size=args.batch_size,
            time_budget_s=args.time_budget,
            max_steps=args.max_steps,
            eval_every_s=args.eval_every,
            eval_limit=args.eval_limit,
            merge=args.merge,
            seed=args.seed,
            threads=args.threads,
        )
        policy = task.prompt if task else PromptFormat(system=args.system)
        finetune_from_files(
            args.base,
            args.data,
            args.held_out,
            args.out,
            cfg,
            policy=policy,
            init_from=args.init_from,
            placeholders=placeholders,
        )
        return
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
        answers=_answers(args, task),
        select_by=args.select_by,
        placeholders=placeholders,
        word_dropout=args.word_dropout,
    )


def _answers(args: argparse.Namespace, task: Task | None) -> tuple[str, ...]:
    if args.answers_file is not None:
        return tuple(json.loads(args.answers_file.read_text()))
    return (task.answers or ()) if task else ()


def build(args: argparse.Namespace, settings: Settings) -> None:
    build_student(task_named(settings, args.task))


def evaluate(args: argparse.Namespace, settings: Settings) -> None:
    task = task_named(settings, args.task) if args.task else None
    student = task.student if task else args.student
    print(json.dumps(asyncio.run(exact_match(student, args.data, task)), indent=2))


def import_gguf(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.training.gguf import gguf_in_package
    from gateway.training.gguf import import_gguf as convert

    source = args.file if args.file is not None else gguf_in_package(args.package)
    model = convert(source, args.out)
    print(
        f"{source.name} -> {model.out}: {model.architecture}, {model.parameters / 1e6:.1f}M "
        f"parameters, vocabulary {model.vocab_size}, "
        f"chat template {'kept' if model.chat_template else 'absent (the file had none)'}"
    )
