"""The one place a teacher is chosen, for ``serve`` and every command: the real API when its
key is set, otherwise the local simulator (for demos and tests; labelled as such), otherwise
a start-up error. The simulator is an HTTP server (``gateway/simulator.py``, the edge's):
the caller hands in how to start one, so the data path never imports a web framework."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.examples import Example, read_examples
from gateway.tasks import TeacherConfig
from gateway.teachers.anthropic import AnthropicTeacher
from gateway.teachers.base import Teacher
from gateway.teachers.openai_compat import OpenAICompatTeacher
from gateway.teachers.resilience import ResilientTeacher

__all__ = ["JudgeFunction", "OpenedTeacher", "RunningSimulator", "StartSimulator", "open_teacher"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningSimulator:
    """A teacher stand-in serving the real wire protocols at ``url`` (its root)."""

    url: str
    stop: Callable[[], Awaitable[None]]


# A rubric a program checks, (input, answer) -> verdict: what a simulator judges with.
JudgeFunction = Callable[[str, str], Any]


class StartSimulator(Protocol):
    async def __call__(
        self,
        known: Sequence[Example],
        *,
        accuracy: float,
        answer_set: tuple[str, ...] | None,
        judge: JudgeFunction | None = None,
    ) -> RunningSimulator: ...


@dataclass
class OpenedTeacher:
    teacher: Teacher
    label: str
    _simulator: RunningSimulator | None = None

    async def aclose(self) -> None:
        await self.teacher.aclose()
        if self._simulator is not None:
            await self._simulator.stop()


def _client(config: TeacherConfig, *, base_url: str | None, api_key: str) -> Teacher:
    if config.provider == "anthropic":
        return AnthropicTeacher(
            model=config.model, api_key=api_key, base_url=base_url, timeout_s=config.timeout_s
        )
    if base_url is None:
        raise ValueError("an openai-provider teacher needs base_url")
    return OpenAICompatTeacher(
        model=config.model,
        base_url=base_url,
        api_key=api_key,
        timeout_s=config.timeout_s,
        temperature=config.temperature,
    )


def _resilient(inner: Teacher, config: TeacherConfig) -> Teacher:
    return ResilientTeacher(inner, deadline_s=config.deadline_s, max_attempts=config.max_attempts)


async def open_teacher(
    task_name: str,
    config: TeacherConfig | None,
    answer_set: tuple[str, ...] | None,
    *,
    known: Sequence[Example] | None = None,
    simulator: StartSimulator | None = None,
    judge: JudgeFunction | None = None,
) -> OpenedTeacher:
    """``known``: examples a simulator answers from instead of ``config.simulator_data``
    (``evaluate`` passes the set it evaluates, so the simulated teacher knows its references).
    Without a config only a simulator of ``known``, always right, can be opened.
    ``simulator``: how to start one; without it, only the real API. ``judge``: the
    simulator's verdicts, for a judge model (``gateway/judges/factory.py``)."""
    config = config or TeacherConfig(api_key_env="", simulator_accuracy=1.0)
    key = os.environ.get(config.api_key_env) if config.api_key_env else None
    if key:
        return OpenedTeacher(
            _resilient(_client(config, base_url=config.base_url, api_key=key), config), config.model
        )
    if known is None and config.simulator_data:
        known = [ex for path in config.simulator_data for ex in read_examples(path)]
    if (not known and judge is None) or simulator is None:
        need = config.api_key_env or "an API key"
        need += " (or simulator_data for a demo)" if simulator is not None else ""
        raise ValueError(f"task {task_name!r}: its teacher needs {need}")
    running = await simulator(
        known or [], accuracy=config.simulator_accuracy, answer_set=answer_set, judge=judge
    )
    base_url = running.url + ("/v1" if config.provider == "openai" else "")
    why = f"{config.api_key_env} not set" if config.api_key_env else "no teacher configured"
    label = f"simulator (accuracy {config.simulator_accuracy}, {why})"
    logger.warning(
        "task %s: %s; the teacher is the local SIMULATOR at %s", task_name, why, base_url
    )
    teacher = _resilient(_client(config, base_url=base_url, api_key="simulator"), config)
    return OpenedTeacher(teacher, label, running)
