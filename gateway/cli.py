"""``distillgate``: serve the gateway, build students, prepare data.

distillgate serve [--host H] [--port P]
distillgate student train --data train.jsonl [--data more.jsonl] [--held-out dev.jsonl]
                          [--init-from DIR] [--task NAME] --out DIR
distillgate student build --task NAME          (train per the task's [build] recipe)
distillgate student evaluate (--task NAME | --student DIR) --data test.jsonl
distillgate data import-csv FILE.csv --out FILE.jsonl [--prompt-column C --answer-column C]
distillgate data split FILE.jsonl --fraction F --out-kept A.jsonl --out-split B.jsonl
distillgate calibrate (--task NAME | --student DIR) --data cal.jsonl
                      [--target-accuracy A | --max-escalation E] [--delta D] [--out FILE]
distillgate calibrate --task NAME --from-stream [--student DIR] [--data more.jsonl] [--out FILE]
distillgate export --task NAME --out train.jsonl [--chat-out chat.jsonl] [--group G]
distillgate evaluate (--task NAME | --student DIR --calibrator FILE) --data test.jsonl
                     --out report.json
distillgate teacher-sim --data labelled.jsonl [--host H] [--port P] [--accuracy A] [--latency-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.settings import Settings
from gateway.tasks import PromptFormat, Task, TaskConfigError, default_calibrator, load_tasks
from training.examples import Example

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
    from tqdm import tqdm

    from training.examples import read_examples, stratified_split
    from training.trainer import TrainConfig, train_student

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
    _train(
        [task.build.train],
        task.build.held_out,
        task.student,
        budget=task.build.time_budget_s,
        max_steps=None,
        answers=task.answers or (),
    )


async def _evaluate(student: Path, data: Path, task: Task | None) -> dict[str, float]:
    from gateway.engines.transformers import TransformersEngine
    from gateway.replay import replay
    from training.examples import read_examples

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


def _calibrate(
    student: Path,
    examples: Sequence[Example],
    out: Path,
    *,
    target_accuracy: float | None,
    max_escalation: float | None,
    delta: float,
    max_tokens: int,
    prompt: PromptFormat,
) -> None:
    from tqdm import tqdm

    from calibration import save_calibration
    from calibration.plots import reliability_figure, risk_coverage_figure
    from gateway.commands.calibrate import fit_calibration, score_set, sequence_confidence

    with tqdm(total=3, desc="calibrate", bar_format="{l_bar}{bar}| {n}/{total} {postfix}") as bar:
        bar.set_postfix_str(f"replaying {len(examples)} examples through the student")
        scored = asyncio.run(score_set(student, examples, max_tokens=max_tokens, prompt=prompt))
        bar.update()
        bar.set_postfix_str("fitting temperature and threshold")
        calibration, held = fit_calibration(
            scored,
            student,
            target_accuracy=target_accuracy,
            max_escalation=max_escalation,
            delta=delta,
        )
        bar.update()
        bar.set_postfix_str("writing artifact and plots")
        save_calibration(calibration, out)
        curves = {
            "before (T = 1)": sequence_confidence(held.greedy, 1.0),
            f"after (T = {calibration.temperature:.2f})": sequence_confidence(
                held.greedy, calibration.temperature
            ),
        }
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
    goal = (
        f"target accepted accuracy {calibration.target_accuracy} (delta {calibration.delta})"
        if calibration.target_accuracy is not None
        else f"escalate at most {calibration.max_escalation}"
    )
    warning = "" if calibration.certified else " -- NOT CERTIFIED: everything escalates"
    print(
        f"\ntemperature {calibration.temperature:.4f}; "
        f"threshold {calibration.threshold:.4f} for {goal}: "
        f"accepts {after['coverage']:.1%} with accuracy {after['accepted_accuracy']:.4f} "
        f"(error bound {calibration.error_bound:.4f}){warning}"
    )
    print(f"wrote {out}, {stem}.reliability.png and {stem}.risk_coverage.png")


def calibrate_task(task: Task, data: Path | None = None) -> None:
    data = data or task.routing.calibration_data
    if data is None:
        raise SystemExit(
            f"task {task.name!r}: give --data (the task has no routing.calibration_data)"
        )
    from training.examples import read_examples

    _calibrate(
        task.student,
        read_examples(data),
        task.calibrator_path,
        target_accuracy=task.routing.target_accuracy,
        max_escalation=task.routing.max_escalation,
        delta=task.routing.delta,
        max_tokens=task.generation.max_tokens,
        prompt=task.prompt,
    )


def _evaluate_routing(task: Task, data: Path, out: Path, max_tokens: int | None = None) -> None:
    from calibration import load_calibration
    from calibration.plots import quality_cost_figure
    from gateway.commands.evaluate import evaluate
    from gateway.deployment import TaskRuntime
    from gateway.engines.transformers import TransformersEngine
    from gateway.teachers.base import Teacher
    from gateway.teachers.factory import OpenedTeacher, open_teacher
    from gateway.testing.sim import SimulatedAnswers, SimulatedTeacher
    from training.examples import read_examples

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


def _answer_budget(student: Path, answers: Sequence[str]) -> int:
    """Completion tokens for the longest answer in the data, its end token and some slack."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student)
    return max(len(tok.encode(a, add_special_tokens=False)) for a in answers) + 8


def _task_for_student(student: Path, calibrator: Path | None, data: Path) -> Task:
    """An ad-hoc task around a bare student folder: the answer budget, and (for labels) the
    answer set, taken from the data."""
    from gateway.tasks import GenerationLimits
    from training.examples import read_examples
    from training.tokenizer import is_closed_answer_set

    answers = [ex.answer for ex in read_examples(data)]
    return Task(
        name=student.name,
        student=student,
        calibrator=calibrator,
        answers=tuple(sorted(set(answers))) if is_closed_answer_set(answers) else None,
        generation=GenerationLimits(max_tokens=_answer_budget(student, answers)),
    )


def _teacher_sim(data: Path, host: str, port: int, accuracy: float, latency_ms: float) -> None:
    import uvicorn

    from gateway.testing.sim import SimulatedAnswers, create_sim_app
    from training.examples import read_examples

    answers = SimulatedAnswers.from_examples(read_examples(data), accuracy=accuracy)
    known = len(answers.references)
    print(f"teacher simulator: {known} known prompts, accuracy {accuracy}, latency {latency_ms} ms")
    uvicorn.run(
        create_sim_app(answers, latency_s=latency_ms / 1000),
        host=host,
        port=port,
        log_level="warning",
    )


def _serve(settings: Settings) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.engines.factory import missing_dependency

    for task in load_tasks(settings.tasks_dir).values():
        problem = missing_dependency(task)
        if problem is not None:
            raise SystemExit(problem)
        if not (task.student / "config.json").is_file():
            if not settings.build_missing_students or task.build is None:
                raise SystemExit(f"task {task.name!r}: no student at {task.student}")
            print(f"task {task.name!r} has no student yet; building it first (one time).")
            build_student(task)
        if (
            task.calibrator is not None
            and not task.calibrator.is_file()
            and task.routing.calibration_data
        ):
            print(f"task {task.name!r} has no calibrator yet; calibrating it first (one time).")
            calibrate_task(task)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
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
    train.add_argument(
        "--data", type=Path, required=True, action="append", help="JSONL; repeat to combine"
    )
    train.add_argument(
        "--init-from", type=Path, help="continue from this student (its tokenizer and weights)"
    )
    train.add_argument(
        "--task", help="put this task's whole answer set in the tokenizer (labels not in --data)"
    )
    train.add_argument(
        "--held-out", type=Path, help="JSONL for checkpoint selection (default: 5%% of --data)"
    )
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--time-budget", type=float, default=780.0, help="seconds (default 780)")
    train.add_argument("--max-steps", type=int)
    case = train.add_mutually_exclusive_group()
    case.add_argument("--lowercase", action="store_true", help="lower-case text (default: auto)")
    case.add_argument("--no-lowercase", action="store_true", help="keep case (default: auto)")
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
    cal = sub.add_parser("calibrate", help="fit a task's temperature and accept threshold")
    cal.add_argument("--task")
    cal.add_argument("--student", type=Path, help="with --task: calibrate this student instead")
    cal.add_argument(
        "--data", type=Path, help="labelled JSONL (default: the task's routing.calibration_data)"
    )
    cal.add_argument(
        "--from-stream",
        action="store_true",
        help="fit on the task's captured escalation and audit pairs (its holdout share)",
    )
    goal = cal.add_mutually_exclusive_group()
    goal.add_argument("--target-accuracy", type=float)
    goal.add_argument("--max-escalation", type=float)
    cal.add_argument("--delta", type=float)
    cal.add_argument("--out", type=Path, help="artifact path (default: the task's calibrator)")
    cal.add_argument("--max-tokens", type=int, help="with --student (default: from the data)")

    ev = sub.add_parser(
        "evaluate", help="replay labelled data through the routing; report quality and cost"
    )
    which = ev.add_mutually_exclusive_group(required=True)
    which.add_argument("--task")
    which.add_argument("--student", type=Path)
    ev.add_argument("--calibrator", type=Path)
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--out", type=Path, required=True)
    ev.add_argument("--max-tokens", type=int, help="replay as if every client sent this max_tokens")

    exp = sub.add_parser("export", help="captured pairs -> training files (a consumer group)")
    exp.add_argument("--task", required=True)
    exp.add_argument("--out", type=Path, required=True, help='{"prompt","answer"} JSONL')
    exp.add_argument("--chat-out", type=Path, help='{"messages"} JSONL (default: OUT.chat.jsonl)')
    exp.add_argument("--group", default="distillgate-export")
    exp.add_argument("--consumer", help="consumer name (default: host-pid)")

    keys = sub.add_parser("keys", help="client API keys").add_subparsers(
        dest="action", required=True
    )
    new = keys.add_parser("new", help="mint a key: print it once, and its key-file entry")
    new.add_argument("--name", required=True, help="what logs and metrics call the key")
    new.add_argument("--task", action="append", help="a task it may call; repeat (default: all)")
    new.add_argument("--requests-per-minute", type=int)
    new.add_argument("--tokens-per-minute", type=int)
    keys.add_parser("hash", help="read a key on stdin, print its key-file sha256")

    sim = sub.add_parser(
        "teacher-sim", help="serve the teacher simulator (Anthropic and OpenAI APIs)"
    )
    sim.add_argument("--data", type=Path, required=True)
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8100)
    sim.add_argument("--accuracy", type=float, default=1.0)
    sim.add_argument("--latency-ms", type=float, default=0.0)
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
    # The SDKs log whole requests (headers, prompts) at DEBUG: never below WARNING here, so
    # no prompt and no key reaches a log at any gateway log level (tests/test_logs.py).
    for chatty in ("anthropic", "openai", "httpx", "httpx2", "httpcore", "aiohttp", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
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
            lowercase=True if args.lowercase else False if args.no_lowercase else None,
            seed=args.seed,
            threads=args.threads,
            init_from=args.init_from,
            answers=(_task(settings, args.task).answers or ()) if args.task else (),
        )
    elif args.command == "student" and args.action == "build":
        build_student(_task(settings, args.task))
    elif args.command == "student" and args.action == "evaluate":
        task = _task(settings, args.task) if args.task else None
        student = task.student if task else args.student
        print(json.dumps(asyncio.run(_evaluate(student, args.data, task)), indent=2))
    elif args.command == "calibrate":
        _dispatch_calibrate(args, settings)
    elif args.command == "evaluate":
        if args.task:
            task = _task(settings, args.task)
            if args.calibrator:
                task = task.model_copy(update={"calibrator": args.calibrator})
        else:
            task = _task_for_student(args.student, args.calibrator, args.data)
        _evaluate_routing(task, args.data, args.out, args.max_tokens)
    elif args.command == "export":
        _export(_task(settings, args.task), settings, args)
    elif args.command == "keys":
        _keys(args)
    elif args.command == "teacher-sim":
        _teacher_sim(args.data, args.host, args.port, args.accuracy, args.latency_ms)
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


def _keys(args: argparse.Namespace) -> None:
    from gateway.auth import key_digest, new_key

    if args.action == "hash":
        print(key_digest(sys.stdin.readline().strip()).hex())
        return
    key = new_key()
    entry = ["[[keys]]", f"name = {json.dumps(args.name)}", f'sha256 = "{key_digest(key).hex()}"']
    if args.task:
        entry.append(f"tasks = {json.dumps(args.task)}")
    for field in ("requests_per_minute", "tokens_per_minute"):
        if getattr(args, field) is not None:
            entry.append(f"{field} = {getattr(args, field)}")
    print(f"key (shown once; give it to the client, store only the entry below):\n{key}\n")
    print("\n".join(entry))


def _dispatch_calibrate(args: argparse.Namespace, settings: Settings) -> None:
    from training.examples import read_examples

    goal_given = args.target_accuracy is not None or args.max_escalation is not None
    if args.task:
        task = _task(settings, args.task)
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
        examples = _stream_examples(task, settings)
        if args.data:
            examples += read_examples(args.data)
        _calibrate(
            task.student,
            examples,
            task.calibrator_path,
            target_accuracy=task.routing.target_accuracy,
            max_escalation=task.routing.max_escalation,
            delta=task.routing.delta,
            max_tokens=task.generation.max_tokens,
            prompt=task.prompt,
        )
        return
    if args.student is None or args.data is None or args.from_stream:
        raise SystemExit("give --task, or --student with --data (--from-stream needs --task)")
    budget = args.max_tokens or _answer_budget(
        args.student, [e.answer for e in read_examples(args.data)]
    )
    _calibrate(
        args.student,
        read_examples(args.data),
        args.out or default_calibrator(args.student),
        target_accuracy=args.target_accuracy if goal_given else 0.97,
        max_escalation=args.max_escalation,
        delta=args.delta or 0.05,
        max_tokens=budget,
        prompt=PromptFormat(),
    )


def _redis(settings: Settings) -> Any:
    import redis

    if not settings.redis_url:
        raise SystemExit("DISTILLGATE_REDIS_URL is empty: there is no capture stream to read")
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


def _stream_examples(task: Task, settings: Settings) -> list[Example]:
    """The holdout share of the captured pairs that pass export's quality gates."""
    from gateway.commands.export import (
        drop_reason,
        is_held_out,
        normalise_prompt,
        stream_records,
        to_example,
    )

    examples: dict[str, Example] = {}
    counts = {"teacher": 0, "audit": 0}
    for record in stream_records(_redis(settings), task):
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


def _export(task: Task, settings: Settings, args: argparse.Namespace) -> None:
    from gateway.commands.export import export

    chat_out = args.chat_out or args.out.with_suffix(".chat.jsonl")
    stats = export(
        _redis(settings), task, args.out, chat_out, group=args.group, consumer=args.consumer
    )
    print(stats.report())
    print(f"wrote {args.out} and {chat_out}")


if __name__ == "__main__":
    main()
