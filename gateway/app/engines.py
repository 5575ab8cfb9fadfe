"""The student engines a serving process opens, and how many cores they may take."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.cores import available_cores, serving_threads
from gateway.engines.base import StudentEngine
from gateway.engines.factory import open_engine
from gateway.engines.vllm import SharedBases
from gateway.metrics import Metrics
from gateway.runtime.loop_processes import LoopProcesses
from gateway.settings import Settings
from gateway.tasks import Task

__all__ = ["DefaultEngines", "EngineFactory", "beside_the_loop"]

logger = logging.getLogger("gateway")

EngineFactory = Callable[[Task, Settings, Metrics], StudentEngine]


class DefaultEngines:
    """The engines tasks ask for; adapters on one base share one vLLM engine (per app)."""

    def __init__(self) -> None:
        self.bases = SharedBases()

    def __call__(self, task: Task, settings: Settings, metrics: Metrics) -> StudentEngine:
        on_step = metrics.batch_size.labels(task=task.name).observe
        return open_engine(task, settings, on_step=on_step, bases=self.bases)


def beside_the_loop(settings: Settings, workers: LoopProcesses) -> Settings:
    """The settings engines are built with: unless told a count, the embedded engine's torch
    threads are the cores the loop's rounds leave when they run in this machine's children
    (spin-waiting threads on a trainer's core made a 60 ms student answer in 3 s)."""
    reserved = workers.threads() if settings.loop == "in-process" else 0
    if settings.torch_threads is not None or not reserved:
        return settings
    cores = available_cores()
    threads = serving_threads(cores, reserved)
    logger.info(
        "the student engine uses %d of %d cores' threads; the loop's rounds keep %d",
        threads,
        cores,
        reserved,
    )
    return settings.model_copy(update={"torch_threads": threads})
