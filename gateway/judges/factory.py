"""The one place a task's judge is chosen: its program, or a judge model through the
teacher machinery (the real API when its key is set, else the local simulator judging with
``simulator_function``, labelled as such)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.judges.base import Judge
from gateway.judges.model import ModelJudge
from gateway.judges.program import ProgramJudge
from gateway.tasks import Task, TeacherConfig
from gateway.teachers.factory import OpenedTeacher, StartSimulator, open_teacher

__all__ = ["OpenedJudge", "open_judge"]


@dataclass
class OpenedJudge:
    judge: Judge
    label: str
    rubric: str
    _teacher: OpenedTeacher | None = None

    async def aclose(self) -> None:
        if self._teacher is not None:
            await self._teacher.aclose()


async def open_judge(task: Task, *, simulator: StartSimulator | None = None) -> OpenedJudge:
    config = task.judge
    if config is None:
        raise ValueError(f"task {task.name!r} has no [judge]")
    if config.function is not None:
        program = ProgramJudge.from_path(config.function)
        return OpenedJudge(program, f"program {config.function}", config.rubric)
    teacher = task.teacher or TeacherConfig()
    as_teacher = teacher.model_copy(
        update={
            "provider": config.provider or teacher.provider,
            "model": config.model or teacher.model,
            "base_url": config.base_url if config.base_url is not None else teacher.base_url,
            "api_key_env": config.api_key_env or teacher.api_key_env,
            "timeout_s": config.timeout_s,
            "deadline_s": config.deadline_s,
            "max_attempts": config.max_attempts,
            "temperature": 0.0,
        }
    )
    judging = None
    if config.simulator_function is not None:
        judging = ProgramJudge.from_path(config.simulator_function).function
    opened = await open_teacher(
        task.name, as_teacher, None, known=[], simulator=simulator, judge=judging
    )
    model = ModelJudge(
        opened.teacher,
        max_tokens=config.max_tokens,
        name=opened.label,
        price=task.prices.teacher_cost,
    )
    return OpenedJudge(model, f"model {opened.label}", config.rubric, opened)
