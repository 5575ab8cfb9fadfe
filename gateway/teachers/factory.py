"""Build a task's teacher from its config: the real API when its key is set, otherwise the
local simulator (for demos and tests; labelled as such), otherwise a start-up error."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from dataclasses import dataclass

import uvicorn

from gateway.tasks import TeacherConfig
from gateway.teachers.anthropic import AnthropicTeacher
from gateway.teachers.base import Teacher
from gateway.teachers.openai_compat import OpenAICompatTeacher
from gateway.teachers.resilience import ResilientTeacher
from gateway.training.examples import read_examples

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
    task_name: str, config: TeacherConfig, answer_set: tuple[str, ...] | None
) -> OpenedTeacher:
    key = os.environ.get(config.api_key_env)
    if key:
        return OpenedTeacher(
            _resilient(_client(config, base_url=config.base_url, api_key=key), config), config.model
        )
    if not config.simulator_data:
        need = f"{config.api_key_env} (or simulator_data for a demo)"
        raise ValueError(f"task {task_name!r}: its teacher needs {need}")
    from gateway.testing.sim import SimulatedAnswers, create_sim_app  # the demo's stand-in only

    examples = [ex for path in config.simulator_data for ex in read_examples(path)]
    answers = SimulatedAnswers.from_examples(examples, accuracy=config.simulator_accuracy)
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
    label = f"simulator ({config.api_key_env} not set)"
    logger.warning(
        "task %s: %s is not set; the teacher is the local SIMULATOR at %s",
        task_name,
        config.api_key_env,
        base_url,
    )
    teacher = _resilient(_client(config, base_url=base_url, api_key="simulator"), config)
    return OpenedTeacher(teacher, label, server, thread)
