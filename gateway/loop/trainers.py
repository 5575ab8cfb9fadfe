"""Trainers: what turns a round's data into a candidate model folder.

The loop only orchestrates. ``BuiltinTrainer`` runs ``distillgate student train`` (the
from-scratch CPU recipe) in a child process at a lower priority with its own thread budget,
so serving keeps the cores it needs. ``CommandTrainer`` runs a team's own command (their
GPUs, ``accelerate launch`` or ``torchrun``, a script that submits a Kubernetes Job and
waits), given the data paths; it must leave a student folder (a Hugging Face model, or an
adapter on a base: ``engines/student_folder``) at ``{out}``. Either way a crash, a non-zero
exit, a timeout or no student folder fails the round, and the serving student is untouched.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.engines.student_folder import is_student
from gateway.tasks import BuildRecipe, LoopPolicy, PromptFormat, Task

__all__ = [
    "BuiltinTrainer",
    "CommandTrainer",
    "TrainJob",
    "Trainer",
    "TrainerFailed",
    "trainer_for",
]


class TrainerFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainJob:
    train: Path  # prompt/answer JSONL
    held_out: Path  # for checkpoint selection (never the gate's evaluation set)
    out: Path  # where the model folder must be written
    parent: Path | None  # the serving student, to continue from; None for a first student
    answers: Path  # JSON list of the task's answers (labels absent from train included)
    log: Path


class Trainer(Protocol):
    async def train(self, job: TrainJob) -> Path: ...


async def _run(argv: list[str], log: Path, timeout_s: float, env: dict[str, str]) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            code = await asyncio.wait_for(proc.wait(), timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            os.killpg(proc.pid, signal.SIGKILL)  # the trainer and whatever it started
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise TrainerFailed(f"the trainer ran past {timeout_s:g} s and was stopped") from None
    if code != 0:
        raise TrainerFailed(f"the trainer exited with status {code} (log: {log})")


def _check_folder(out: Path) -> Path:
    if not is_student(out):
        raise TrainerFailed(
            f"the trainer wrote no model folder at {out} (no config.json or adapter_config.json)"
        )
    return out


class BuiltinTrainer:
    """``distillgate student train``: from scratch, or, when the task's ``[build]`` names a
    ``base``, a fine-tune of it (a parent adapter is continued)."""

    def __init__(
        self,
        policy: LoopPolicy,
        recipe: BuildRecipe | None = None,
        prompt: PromptFormat | None = None,
        *,
        free_text: bool = False,
    ) -> None:
        self.policy, self.recipe, self.prompt = policy, recipe, prompt or PromptFormat()
        self.free_text = free_text

    def argv(self, job: TrainJob) -> list[str]:
        p = self.policy
        argv = [sys.executable, "-m", "gateway.cli", "student", "train", "--data", str(job.train)]
        argv += ["--held-out", str(job.held_out), "--out", str(job.out)]
        argv += ["--answers-file", str(job.answers), "--threads", str(p.train_threads)]
        argv += ["--time-budget", str(p.train_budget_s)]
        if p.train_max_steps is not None:
            argv += ["--max-steps", str(p.train_max_steps)]
        if job.parent is not None:
            argv += ["--init-from", str(job.parent)]
        if self.free_text:  # as `student build` trains a judged task's student
            argv += ["--select-by", "token_accuracy", "--word-dropout", "0"]
        for name, pattern in self.prompt.placeholders.items():
            argv += ["--placeholder", f"{name}={pattern}"]
        recipe = self.recipe
        if recipe is not None and recipe.base is not None:
            argv += ["--base", str(recipe.base), "--method", recipe.method]
            argv += ["--lora-rank", str(recipe.lora_rank)]
            if recipe.lr is not None:
                argv += ["--lr", str(recipe.lr)]
            if self.prompt.system:
                argv += ["--system", self.prompt.system]
        return argv

    async def train(self, job: TrainJob) -> Path:
        p = self.policy
        threads = str(p.train_threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        argv = self.argv(job)
        if p.train_nice:
            argv = ["nice", "-n", str(p.train_nice), *argv]
        await _run(argv, job.log, p.train_timeout_s, env)
        return _check_folder(job.out)


class CommandTrainer:
    """``template``: a shell-free command line with ``{train}``, ``{held_out}``, ``{out}``,
    ``{parent}`` and ``{answers}`` placeholders (split like a shell would, never run by one)."""

    def __init__(self, template: str, policy: LoopPolicy) -> None:
        self.template, self.policy = template, policy

    def argv(self, job: TrainJob) -> list[str]:
        values = {
            "train": str(job.train),
            "held_out": str(job.held_out),
            "out": str(job.out),
            "parent": str(job.parent or ""),
            "answers": str(job.answers),
        }
        return [part.format(**values) for part in shlex.split(self.template)]

    async def train(self, job: TrainJob) -> Path:
        await _run(self.argv(job), job.log, self.policy.train_timeout_s, dict(os.environ))
        return _check_folder(job.out)


def trainer_for(task: Task) -> Trainer:
    policy = task.loop
    if policy is None:
        raise ValueError(f"task {task.name!r} has no [loop] section")
    if policy.trainer == "builtin":
        return BuiltinTrainer(policy, task.build, task.prompt, free_text=task.judge is not None)
    return CommandTrainer(policy.trainer, policy)
