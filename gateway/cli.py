"""``distillgate``: serve the gateway, build students, prepare data.

distillgate serve [--host H] [--port P]
distillgate student train --data train.jsonl [--held-out dev.jsonl] --out DIR
distillgate student build --task NAME          (train per the task's [build] recipe)
distillgate student evaluate (--task NAME | --student DIR) --data test.jsonl
distillgate data import-csv FILE.csv --out FILE.jsonl [--prompt-column C --answer-column C]
distillgate data split FILE.jsonl --fraction F --out-kept A.jsonl --out-split B.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.settings import Settings
from gateway.tasks import Task, TaskConfigError, load_tasks

__all__ = ["main"]

logger = logging.getLogger("distillgate")


def _task(settings: Settings, name: str) -> Task:
    tasks = load_tasks(settings.tasks_dir)
    if name not in tasks:
        raise SystemExit(
            f"unknown task {name!r}; tasks in {settings.tasks_dir}: {', '.join(tasks)}"
        )
    return tasks[name]


def _train(
    data: Path,
    held_out: Path | None,
    out: Path,
    *,
    budget: float,
    max_steps: int | None,
    lowercase: bool = True,
    seed: int = 0,
    threads: int | None = None,
) -> None:
    from tqdm import tqdm

    from training.examples import read_examples, stratified_split
    from training.trainer import TrainConfig, train_student

    train = read_examples(data)
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
    with tqdm(
        total=1000, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}"
    ) as bar:

        def progress(fraction: float, stats: dict[str, float]) -> None:
            bar.n = int(fraction * 1000)
            bar.set_postfix(
                step=int(stats["step"]),
                loss=f"{stats['loss']:.3f}",
                held_out=f"{max(stats['best'], 0):.3f}",
                refresh=False,
            )
            bar.refresh()

        result = train_student(train, dev, out, cfg, progress=progress)
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
    _train(
        task.build.train,
        task.build.held_out,
        task.student,
        budget=task.build.time_budget_s,
        max_steps=None,
    )


async def _evaluate(student: Path, data: Path, task: Task | None) -> dict[str, float]:
    from gateway.engines.base import GenerationRequest, Message, SamplingParams
    from gateway.engines.transformers import TransformersEngine
    from training.examples import read_examples

    examples = read_examples(data)
    engine = TransformersEngine(student, max_batch_size=64, max_waiting=len(examples))
    await engine.start()
    max_tokens = task.generation.max_tokens if task else 32
    started = time.perf_counter()

    async def answer(i: int) -> str:
        ex = examples[i]
        req = GenerationRequest(
            f"eval-{i}",
            SamplingParams(max_tokens=max_tokens),
            messages=tuple(Message(m["role"], m["content"]) for m in ex.chat()),
        )
        return "".join([d.text async for d in engine.generate(req)])

    try:
        answers = await asyncio.gather(*(answer(i) for i in range(len(examples))))
    finally:
        await engine.aclose()
    correct = sum(a == ex.answer for a, ex in zip(answers, examples, strict=True))
    return {
        "n": len(examples),
        "exact_match": correct / len(examples),
        "seconds": time.perf_counter() - started,
    }


def _serve(settings: Settings) -> None:
    import uvicorn

    from gateway.app import create_app

    for task in load_tasks(settings.tasks_dir).values():
        if not (task.student / "config.json").is_file():
            if not settings.build_missing_students or task.build is None:
                raise SystemExit(f"task {task.name!r}: no student at {task.student}")
            print(f"task {task.name!r} has no student yet; building it first (one time).")
            build_student(task)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distillgate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--tasks-dir", type=Path)

    student = sub.add_parser("student", help="train, build or evaluate a student").add_subparsers(
        dest="action", required=True
    )
    train = student.add_parser("train", help="train a from-scratch student on prompt/answer JSONL")
    train.add_argument("--data", type=Path, required=True)
    train.add_argument(
        "--held-out", type=Path, help="JSONL for checkpoint selection (default: 5%% of --data)"
    )
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--time-budget", type=float, default=780.0, help="seconds (default 780)")
    train.add_argument("--max-steps", type=int)
    train.add_argument("--no-lowercase", action="store_true", help="keep case (free-text answers)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int)
    build = student.add_parser("build", help="train a task's student from its [build] recipe")
    build.add_argument("--task", required=True)
    evaluate = student.add_parser("evaluate", help="greedy exact-match accuracy on labelled JSONL")
    target = evaluate.add_mutually_exclusive_group(required=True)
    target.add_argument("--task")
    target.add_argument("--student", type=Path)
    evaluate.add_argument("--data", type=Path, required=True)

    data = sub.add_parser("data", help="prepare labelled data").add_subparsers(
        dest="action", required=True
    )
    imp = data.add_parser("import-csv", help="CSV (e.g. Banking77's text,category) -> JSONL")
    imp.add_argument("csv", type=Path)
    imp.add_argument("--out", type=Path, required=True)
    imp.add_argument("--prompt-column", default="text")
    imp.add_argument("--answer-column", default="category")
    split = data.add_parser("split", help="stratified split of a JSONL file")
    split.add_argument("data", type=Path)
    split.add_argument("--fraction", type=float, required=True)
    split.add_argument("--out-kept", type=Path, required=True)
    split.add_argument("--out-split", type=Path, required=True)
    split.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    overrides = {
        k: v for k in ("host", "port", "tasks_dir") if (v := getattr(args, k, None)) is not None
    }
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        _dispatch(args, settings)
    except (TaskConfigError, ValueError, FileNotFoundError) as exc:
        sys.exit(f"distillgate: {exc}")


def _dispatch(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "serve":
        _serve(settings)
    elif args.command == "student" and args.action == "train":
        _train(
            args.data,
            args.held_out,
            args.out,
            budget=args.time_budget,
            max_steps=args.max_steps,
            lowercase=not args.no_lowercase,
            seed=args.seed,
            threads=args.threads,
        )
    elif args.command == "student" and args.action == "build":
        build_student(_task(settings, args.task))
    elif args.command == "student" and args.action == "evaluate":
        task = _task(settings, args.task) if args.task else None
        student = task.student if task else args.student
        print(json.dumps(asyncio.run(_evaluate(student, args.data, task)), indent=2))
    elif args.command == "data" and args.action == "import-csv":
        from training.examples import examples_from_csv, write_examples

        n = write_examples(
            args.out,
            examples_from_csv(
                args.csv, prompt_column=args.prompt_column, answer_column=args.answer_column
            ),
        )
        print(f"wrote {n} examples to {args.out}")
    elif args.command == "data" and args.action == "split":
        from training.examples import read_examples, stratified_split, write_examples

        kept, held = stratified_split(
            read_examples(args.data), fraction=args.fraction, seed=args.seed
        )
        write_examples(args.out_kept, kept)
        write_examples(args.out_split, held)
        print(f"kept {len(kept)} -> {args.out_kept}; split {len(held)} -> {args.out_split}")


if __name__ == "__main__":
    main()
