"""``distillgate loop``: a task's improvement loop as a long-running worker, and its status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator

from gateway.cli.resolve import task_named
from gateway.cores import run_in_background
from gateway.judges.base import Judge
from gateway.settings import Settings
from gateway.tasks import Task

__all__ = ["run", "status"]

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.loop.source import CaptureHistory
    from gateway.loop.worker import LoopWorker

    task = task_named(settings, args.task)
    if task.loop is None:
        raise SystemExit(f"task {task.name!r} has no [loop] section")
    if task.loop.train_nice:  # the trainer and the replays it starts inherit it
        logger.info(
            "task %s: the loop runs at %s", task.name, run_in_background(task.loop.train_nice)
        )
    redis_url = settings.redis_target or None
    history = CaptureHistory(redis_url, spools=list(args.spool))

    async def once() -> None:
        async with _judge(task) as judge:
            worker = LoopWorker(task, history, judge=judge, redis_url=redis_url)
            report = await worker.step()
        print(json.dumps(report.as_dict() if report else {"round": None}, indent=2))

    async def forever() -> None:
        async with _judge(task) as judge:
            worker = LoopWorker(task, history, judge=judge, redis_url=redis_url)
            stop = asyncio.Event()
            running = asyncio.create_task(worker.run(stop))

            def halt() -> None:  # a round in progress is cancelled: its trainer is killed
                stop.set()
                running.cancel()

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, halt)
            with contextlib.suppress(asyncio.CancelledError):
                await running

    asyncio.run(once() if args.once else forever())


@contextlib.asynccontextmanager
async def _judge(task: Task) -> AsyncIterator[Judge | None]:
    """A free-text task's judge for the worker's rounds (the simulator's without a key)."""
    if task.judge is None:
        yield None
        return
    from gateway.judges.factory import open_judge
    from gateway.simulator import start_simulator

    opened = await open_judge(task, simulator=start_simulator)
    logger.info("task %s: rounds are judged by %s", task.name, opened.label)
    try:
        yield opened.judge
    finally:
        await opened.aclose()


def status(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.loop.status import loop_status

    task = task_named(settings, args.task)
    if task.loop is None:
        raise SystemExit(f"task {task.name!r} has no [loop] section")
    print(json.dumps(loop_status(task), indent=2))
