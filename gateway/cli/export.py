"""``distillgate export``: captured pairs to training files."""

from __future__ import annotations

import argparse

from gateway.cli.resolve import redis_client, task_named
from gateway.settings import Settings
from gateway.tasks import Task

__all__ = ["export_task", "run"]


def export_task(task: Task, settings: Settings, args: argparse.Namespace) -> None:
    from gateway.jobs.export import export

    chat_out = args.chat_out or args.out.with_suffix(".chat.jsonl")
    stats = export(
        redis_client(settings), task, args.out, chat_out, group=args.group, consumer=args.consumer
    )
    print(stats.report())
    print(f"wrote {args.out} and {chat_out}")


def run(args: argparse.Namespace, settings: Settings) -> None:
    export_task(task_named(settings, args.task), settings, args)
