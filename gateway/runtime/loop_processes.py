"""The single-process demo's loop: ``serve`` starts one ``distillgate loop`` child per
``[loop]`` task, which lowers itself to idle priority (``gateway.cores``) within the task's
thread budget, so a round (training, calibration, the gate's replays) never takes the cores
serving needs; ``threads`` is what serving leaves them. The children read this gateway's
spool as well as Redis, so the loop works with no Redis server at all. A fleet sets
``DISTILLGATE_LOOP=off`` and runs the workers apart."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence

from gateway.settings import Settings
from gateway.tasks import Task

__all__ = ["LoopProcesses"]

logger = logging.getLogger(__name__)


class LoopProcesses:
    def __init__(self, settings: Settings, tasks: Sequence[Task]) -> None:
        self.settings, self.tasks = settings, tasks
        self.children: list[subprocess.Popen[bytes]] = []

    def argv(self, task: Task) -> list[str]:
        argv = [sys.executable, "-m", "gateway.cli", "loop", "--task", task.name]
        return [*argv, "--spool", str(self.settings.spool_path)]

    def threads(self) -> int:
        """The most CPU threads the children's rounds run at once: one task's trainer when
        the tasks take turns (``one_round_at_a_time``), else every task's together."""
        budgets = [t.loop.train_threads for t in self.tasks if t.loop is not None]
        if not budgets:
            return 0
        if all(t.loop is not None and t.loop.one_round_at_a_time for t in self.tasks):
            return max(budgets)
        return sum(budgets)

    def start(self) -> None:
        for task in self.tasks:
            assert task.loop is not None
            threads = str(task.loop.train_threads)
            env = {
                **os.environ,
                "DISTILLGATE_TASKS_DIR": str(self.settings.tasks_dir.absolute()),
                "DISTILLGATE_REDIS_URL": self.settings.redis_target,
                "DISTILLGATE_LOG_LEVEL": self.settings.log_level,
                "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
            }
            self.children.append(subprocess.Popen(self.argv(task), env=env))
            logger.info("task %s: the improvement loop runs beside the gateway", task.name)

    def stop(self, timeout_s: float = 10.0) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.wait(timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()
