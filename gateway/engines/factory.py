"""Build a task's student engine from its ``[engine]`` section and the gateway's settings.

Engines import their heavy dependencies (torch, vllm) only when a task asks for them, so
the gateway imports and serves remote students without them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.engines.admission import GatedEngine
from gateway.engines.base import StudentEngine
from gateway.engines.placeholders import PlaceholderEngine, read_placeholders
from gateway.engines.student_folder import is_student, open_student
from gateway.settings import Settings
from gateway.tasks import RemoteEngineConfig, Task, VLLMEngineConfig

if TYPE_CHECKING:
    from gateway.engines.vllm import SharedBases

__all__ = ["ReplayEngine", "missing_dependency", "open_engine", "replay_engine"]

# Opens (does not start) an engine for a student folder, with room for ``queue`` requests.
ReplayEngine = Callable[[Path, int], StudentEngine]


def missing_dependency(task: Task) -> str | None:
    """Why this machine cannot run the task's engine, said plainly; None when it can."""
    if isinstance(task.engine, VLLMEngineConfig):
        from gateway.engines.vllm import vllm_available

        if not vllm_available():
            return (
                f"task {task.name!r} asks for the vllm engine, but vllm is not installed "
                "here: pip install 'distillgate[gpu]' on a GPU machine, or set "
                '[engine] kind = "transformers" (CPU) or "remote" (a vLLM fleet)'
            )
    return None


def open_engine(
    task: Task,
    settings: Settings,
    on_step: Callable[[int], None] | None = None,
    bases: SharedBases | None = None,
) -> StudentEngine:
    """``on_step``: called with each decode step's batch size, by engines that batch.
    ``bases``: where a vLLM task whose student is an adapter finds the engine of its base,
    shared with the other adapters on it (without: an engine of its own)."""
    return _reading_placeholders(_open_engine(task, settings, on_step, bases), task.student)


def _reading_placeholders(engine: StudentEngine, student: Path) -> StudentEngine:
    """The engine as the student was trained to be read: its placeholders filled in."""
    placeholders = read_placeholders(student)
    return engine if placeholders is None else PlaceholderEngine(engine, placeholders)


def _open_engine(
    task: Task,
    settings: Settings,
    on_step: Callable[[int], None] | None,
    bases: SharedBases | None,
) -> StudentEngine:
    config = task.engine
    if isinstance(config, RemoteEngineConfig):
        from gateway.engines.remote import RemoteEngine

        api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if config.api_key_env and not api_key:
            raise RuntimeError(f"task {task.name!r}: ${config.api_key_env} is not set")
        remote = RemoteEngine(
            str(config.base_url),
            config.model or task.name,
            api_key=api_key,
            client=config.client,
            stream=config.stream,
            timeout_s=config.timeout_s,
            connect_timeout_s=config.connect_timeout_s,
            max_connections=config.max_connections,
            confidence_top_k=config.confidence_top_k,
            health_path=config.health_path,
        )
        return _gated(remote, config, config.max_connections, settings)
    problem = missing_dependency(task)
    if problem is not None:
        raise RuntimeError(problem)
    if isinstance(config, VLLMEngineConfig):
        from gateway.engines.vllm import VLLMEngine

        arguments = config.model_dump(exclude={"kind", "max_concurrency", "max_queue"})
        if bases is not None and open_student(task.student).is_adapter:
            adapter = bases.adapter(task.student, arguments)
            return _gated(adapter, config, config.max_num_seqs, settings)
        return _gated(VLLMEngine(task.student, **arguments), config, config.max_num_seqs, settings)
    from gateway.engines.transformers import TransformersEngine

    if not is_student(task.student):
        raise RuntimeError(
            f"task {task.name!r}: no student at {task.student}; build it with "
            f"`distillgate student build --task {task.name}`"
        )
    return TransformersEngine(
        task.student,
        max_batch_size=config.max_concurrency or settings.max_batch_size,
        max_waiting=_queue(config.max_queue, settings),
        device=settings.device,
        threads=settings.torch_threads,
        on_step=on_step,
    )


def _queue(configured: int | None, settings: Settings) -> int:
    return settings.max_waiting if configured is None else configured


def _gated(
    engine: StudentEngine,
    config: RemoteEngineConfig | VLLMEngineConfig,
    own_bound: int,
    settings: Settings,
) -> GatedEngine:
    """``own_bound``: what the engine holds at once by itself, the default concurrency."""
    return GatedEngine(
        engine,
        max_running=config.max_concurrency or own_bound,
        max_waiting=_queue(config.max_queue, settings),
    )


def replay_engine(task: Task | None, *, batch: int = 64) -> ReplayEngine:
    """How offline jobs (calibrate, evaluate, the loop's gate) open a student: on the
    task's own engine kind, so a student is calibrated and judged on the log-probabilities
    it is served with (vLLM's top-k in bfloat16 on a GPU are not the embedded engine's).
    A remote fleet serves only what is deployed to it, not a folder handed to a job, so
    its students, and a student without a task, replay on the embedded engine; ``batch``
    is its batch size."""
    config = task.engine if task is not None else None

    def open_student_engine(student: Path, queue: int) -> StudentEngine:
        return _reading_placeholders(open_bare(student, queue), student)

    def open_bare(student: Path, queue: int) -> StudentEngine:
        if task is not None and isinstance(config, VLLMEngineConfig):
            problem = missing_dependency(task)
            if problem is not None:
                raise RuntimeError(problem)
            from gateway.engines.vllm import VLLMEngine

            arguments = config.model_dump(exclude={"kind", "max_concurrency", "max_queue"})
            return VLLMEngine(student, **arguments)
        from gateway.engines.transformers import TransformersEngine

        return TransformersEngine(student, max_batch_size=batch, max_waiting=queue)

    return open_student_engine
