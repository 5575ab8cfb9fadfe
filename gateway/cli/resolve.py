"""What several commands look up: a task by name, the capture stream's Redis."""

from __future__ import annotations

from typing import Any

from gateway.settings import Settings
from gateway.tasks import Task, load_tasks

__all__ = ["redis_client", "task_named"]


def task_named(settings: Settings, name: str) -> Task:
    tasks = load_tasks(settings.tasks_dir)
    if name not in tasks:
        raise SystemExit(
            f"unknown task {name!r}; tasks in {settings.tasks_dir}: {', '.join(tasks)}"
        )
    return tasks[name]


def redis_client(settings: Settings) -> Any:
    from gateway.redis_clients import sync_redis

    if not settings.redis_url:
        raise SystemExit("DISTILLGATE_REDIS_URL is empty: there is no capture stream to read")
    return sync_redis(settings.redis_target, decode_responses=True)
