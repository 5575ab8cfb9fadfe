"""Tasks: one bounded workload each, addressed by the OpenAI ``model`` field.

A task is a TOML file ``<tasks_dir>/<name>.toml``; relative paths inside it are relative
to the file. Loading validates every file and fails with the file and field named.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "BuildRecipe",
    "GenerationLimits",
    "PromptFormat",
    "Task",
    "TaskConfigError",
    "load_tasks",
]


class TaskConfigError(ValueError):
    """A task file is missing, malformed or inconsistent."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptFormat(_Section):
    """What of the client's conversation the student sees.

    ``last_user_message``: only the newest user turn, as the student was trained (bounded
    tasks, where a client's system prompt would only confuse a small model).
    ``conversation``: every turn, through the student's chat template.
    """

    input: Literal["last_user_message", "conversation"] = "last_user_message"
    system: str | None = None


class GenerationLimits(_Section):
    max_tokens: int = Field(32, ge=1, description="Default and ceiling of completion tokens.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Used when a request sets none.")


class BuildRecipe(_Section):
    """How to train the student when its folder is missing (`distillgate student train`)."""

    train: Path
    held_out: Path | None = None
    time_budget_s: float = Field(780.0, gt=0)


class Task(_Section):
    name: str
    description: str = ""
    student: Path
    prompt: PromptFormat = PromptFormat()
    answers: tuple[str, ...] | None = None
    answers_file: Path | None = None
    generation: GenerationLimits = GenerationLimits()
    build: BuildRecipe | None = None

    @field_validator("answers")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and (not v or any(not a for a in v)):
            raise ValueError("answers must be a non-empty list of non-empty strings")
        return v

    @property
    def answer_set(self) -> frozenset[str] | None:
        return frozenset(self.answers) if self.answers is not None else None


def _resolve(base: Path, p: Path | None) -> Path | None:
    return None if p is None else (p if p.is_absolute() else (base / p).resolve())


def load_task(path: Path) -> Task:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TaskConfigError(f"{path}: cannot read task file: {exc}") from None
    raw.setdefault("name", path.stem)
    try:
        task = Task.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise TaskConfigError(f"{path}: {problems}") from None
    base = path.parent
    answers = task.answers
    answers_file = _resolve(base, task.answers_file)
    if answers_file is not None:
        if answers is not None:
            raise TaskConfigError(f"{path}: set either answers or answers_file, not both")
        try:
            loaded = json.loads(answers_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TaskConfigError(f"{path}: answers_file {answers_file}: {exc}") from None
        if not (
            isinstance(loaded, list) and loaded and all(isinstance(a, str) and a for a in loaded)
        ):
            raise TaskConfigError(f"{path}: answers_file must hold a JSON list of strings")
        answers = tuple(loaded)
    build = task.build
    if build is not None:
        build = build.model_copy(
            update={
                "train": _resolve(base, build.train),
                "held_out": _resolve(base, build.held_out),
            }
        )
    return task.model_copy(
        update={
            "student": _resolve(base, task.student),
            "answers": answers,
            "answers_file": answers_file,
            "build": build,
        }
    )


def load_tasks(tasks_dir: Path) -> Mapping[str, Task]:
    if not tasks_dir.is_dir():
        raise TaskConfigError(f"tasks folder {tasks_dir} does not exist")
    tasks = {t.name: t for t in (load_task(p) for p in sorted(tasks_dir.glob("*.toml")))}
    if not tasks:
        raise TaskConfigError(f"no task files (*.toml) in {tasks_dir}")
    return tasks
