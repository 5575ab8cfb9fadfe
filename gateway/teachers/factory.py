"""The one place a teacher is chosen, for ``serve`` and every command: the real API when its
key is set, otherwise the local simulator (for demos and tests; labelled as such), otherwise
a start-up error."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import uvicorn

from gateway.examples import Example, read_examples
from gateway.tasks import TeacherConfig
from gateway.teachers.anthropic import AnthropicTeacher
from gateway.teachers.base import Teacher
from gateway.teachers.openai_compat import OpenAICompatTeacher
from gateway.teachers.resilience import ResilientTeacher

__all__ = ["OpenedTeacher", "open_teacher"]

logger = logging.getLogger(__name__)


@dataclass
class OpenedTeacher:
    teacher: Teacher
    label: str
    _sim_server: uvicorn.Server | None = None
    _sim_thread: threading.Thread | None = None

    async def aclose(self) -> None:
        await self.teacher.aclose()
        if self._sim_server is not None and self._sim_thread is not None:
            self._sim_server.should_exit = True
            await asyncio.to_thread(self._sim_thread.join, 10)


def _client(config: TeacherConfig, *, base_url: str | None, api_key: str) -> Teacher:
    if config.provider == "anthropic":
        return AnthropicTeacher(
            model=config.model, api_key=api_key, base_url=base_url, timeout_s=config.timeout_s
        )
    if base_url is None:
        raise ValueError("an openai-provider teacher needs base_url")
    return OpenAICompatTeacher(
        model=config.model, base_url=base_url, api_key=api_key, timeout_s=config.timeout_s
    )


def _resilient(inner: Teacher, config: TeacherConfig) -> Teacher:
    return ResilientTeacher(inner, deadline_s=config.deadline_s, max_attempts=config.max_attempts)


async def open_teacher(
    task_name: str,
    config: TeacherConfig | None,
    answer_set: tuple[str, ...] | None,
    *,
    known: Sequence[Example] | None = None,
) -> OpenedTeacher:
    """``known``: examples a simulator answers from instead of ``config.simulator_data``
    (``evaluate`` passes the set it evaluates, so the simulated teacher knows its references).
    Without a config only a simulator of ``known``, always right, can be opened."""
    config = config or TeacherConfig(api_key_env="", simulator_accuracy=1.0)
    key = os.environ.get(config.api_key_env) if config.api_key_env else None
    if key:
        return OpenedTeacher(
            _resilient(_client(config, base_url=config.base_url, api_key=key), config), config.model
        )
    if known is None and config.simulator_data:
        known = [ex for path in config.simulator_data for ex in read_examples(path)]
    if not known:
        need = f"{config.api_key_env} (or simulator_data for a demo)"
        raise ValueError(f"task {task_name!r}: its teacher needs {need}")
    from gateway.testing.sim import SimulatedAnswers, create_sim_app  # the demo's stand-in only

    answers = SimulatedAnswers.from_examples(known, accuracy=config.simulator_accuracy)
    if answer_set:
        answers.answer_set = tuple(answer_set)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    # Its own thread and event loop, like a separate server; uvicorn leaves signals alone
    # off the main thread, so the gateway keeps its own handling of SIGTERM.
    server = uvicorn.Server(
        uvicorn.Config(create_sim_app(answers), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="teacher-simulator", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the teacher simulator did not start")
        await asyncio.sleep(0.02)
    base_url = f"http://127.0.0.1:{port}" + ("/v1" if config.provider == "openai" else "")
    why = f"{config.api_key_env} not set" if config.api_key_env else "no teacher configured"
    label = f"simulator (accuracy {config.simulator_accuracy}, {why})"
    logger.warning(
        "task %s: %s; the teacher is the local SIMULATOR at %s", task_name, why, base_url
    )
    teacher = _resilient(_client(config, base_url=base_url, api_key="simulator"), config)
    return OpenedTeacher(teacher, label, server, thread)
