"""A deployment: the task runtimes a gateway serves at one moment, and what they own.

Start-up builds one from the task files. A reload (``POST /admin/reload`` or SIGHUP)
builds the next one beside it, reusing each engine whose student folder is unchanged (same
path and fingerprint) and each teacher whose configuration is unchanged, swaps it in at
once, and retires the old one after its last request has finished: no request fails
because of a swap. A calibrator fitted for another student is refused, at start-up and on
reload alike (the old deployment keeps serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from calibration import Calibration, load_calibration, student_fingerprint
from gateway.capture import Redactor
from gateway.engines.base import StudentEngine
from gateway.engines.student_folder import is_student
from gateway.judges.base import Judge
from gateway.judges.factory import OpenedJudge, open_judge
from gateway.tasks import JudgeConfig, Prices, Task, TeacherConfig
from gateway.teachers.base import Teacher
from gateway.teachers.factory import OpenedTeacher, StartSimulator, open_teacher

__all__ = [
    "CandidateRuntime",
    "Deployment",
    "DeploymentError",
    "EngineMaker",
    "TaskRuntime",
    "build_deployment",
    "retire",
]

logger = logging.getLogger(__name__)

EngineMaker = Callable[[Task], StudentEngine]
_TeacherKey = tuple[TeacherConfig, tuple[str, ...] | None]
_JudgeKey = tuple[JudgeConfig, TeacherConfig | None, Prices]


@dataclass
class TaskRuntime:
    """What serving needs per task, assembled at start-up by the app."""

    task: Task
    engine: StudentEngine | None  # None: no student yet (cold start), the teacher answers
    calibration: Calibration | None = None
    teacher: Teacher | None = None
    teacher_label: str = ""  # shown in /v1/models, e.g. "simulator (no ANTHROPIC_API_KEY)"
    student_fingerprint: str | None = None
    redactor: Redactor | None = None  # set when the task's captures are redacted
    # The registry version serving (gateway/loop/registry.py); None: the task's own folder.
    student_version: str | None = None
    trial: CandidateRuntime | None = None  # a candidate on trial beside it (shadow, canary)
    judge: Judge | None = None  # a free-text task's: judges its audits and shadow answers

    @property
    def version_label(self) -> str:
        """What ``x-distillgate-student`` and capture records say decided: the registry
        version, ``none`` at cold start, else ``static`` (the task's own folder)."""
        if self.engine is None:
            return "none"
        return self.student_version or "static"

    @property
    def trial_label(self) -> str | None:
        """The candidate on trial, as ``Trial.label`` says it: ``v0003 canary 0.1``."""
        if self.trial is None:
            return None
        return f"{self.trial.runtime.version_label} {self.trial.stage} {self.trial.share:g}"


@dataclass
class CandidateRuntime:
    """A candidate on trial (``loop/worker.py``): in ``shadow`` it answers ``share`` of the
    task's requests off the request path; as a ``canary`` it serves them."""

    stage: str
    share: float
    runtime: TaskRuntime


class DeploymentError(ValueError):
    """The task files describe something that cannot be served (e.g. a mismatched pair)."""


@dataclass
class Deployment:
    runtimes: dict[str, TaskRuntime]
    engines: dict[tuple[str, str], StudentEngine] = field(default_factory=dict)
    teachers: dict[_TeacherKey, OpenedTeacher] = field(default_factory=dict)
    judges: dict[_JudgeKey, OpenedJudge] = field(default_factory=dict)
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def acquire(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def release(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    @contextlib.contextmanager
    def lease(self) -> Iterator[Deployment]:
        """Hold the deployment (its engines and teachers stay open) while a request uses it."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    async def wait_idle(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def describe(self) -> dict[str, dict[str, str | None]]:
        return {
            name: {
                "student": str(r.task.student),
                "student_fingerprint": r.student_fingerprint,
                "student_version": r.version_label,
                "calibrator_version": r.calibration.version_id if r.calibration else None,
                "teacher": r.teacher_label or None,
                "trial": r.trial_label,
            }
            for name, r in self.runtimes.items()
        }


def _calibration(task: Task, fingerprint: str) -> Calibration | None:
    if task.calibrator is None or not task.calibrator.is_file():
        logger.warning("task %s has no calibrator: the student answers everything", task.name)
        return None
    try:
        return load_calibration(task.calibrator, student_dir=task.student, fingerprint=fingerprint)
    except ValueError as exc:
        raise DeploymentError(f"task {task.name!r}: {exc}") from None


async def build_deployment(
    tasks: Mapping[str, Task],
    make_engine: EngineMaker,
    previous: Deployment | None = None,
    *,
    simulator: StartSimulator | None = None,
) -> Deployment:
    """Runtimes for ``tasks``, sharing what ``previous`` already has open where unchanged;
    ``simulator`` starts the stand-in teacher of a task without an API key (``serve``'s).

    On failure, whatever this call opened is closed again and the error raised.
    """
    old_engines = previous.engines if previous else {}
    old_teachers = previous.teachers if previous else {}
    old_judges = previous.judges if previous else {}
    new = Deployment(runtimes={})
    try:
        for task in tasks.values():
            redactor = None
            if task.capture.redact:
                redactor = Redactor.with_builtins(task.capture.redact_patterns)
            if task.loop is not None and not is_student(task.student):
                logger.warning("task %s has no student yet: the teacher answers", task.name)
                runtime = TaskRuntime(task, None, redactor=redactor)
            else:
                runtime = await _student_runtime(task, new, old_engines, make_engine, redactor)
            await _attach_teacher(runtime, new, old_teachers, simulator)
            await _attach_judge(runtime, new, old_judges, simulator)
            trial = task.trial
            if trial is not None:
                candidate_task = _candidate_task(task)
                candidate = await _student_runtime(
                    candidate_task, new, old_engines, make_engine, redactor
                )
                candidate.teacher, candidate.teacher_label = runtime.teacher, runtime.teacher_label
                candidate.judge = runtime.judge
                runtime.trial = CandidateRuntime(trial.stage, trial.share, candidate)
            new.runtimes[task.name] = runtime
    except BaseException:
        await retire(new, keep=previous)
        raise
    return new


def _candidate_task(task: Task) -> Task:
    """The task as its candidate serves it: its own student and calibrator, and audits at the
    trial's rate, so a canary's agreement is known after hundreds of requests, not thousands."""
    trial, loop = task.trial, task.loop
    assert trial is not None and loop is not None
    return task.model_copy(
        update={
            "student": trial.student,
            "calibrator": trial.calibrator,
            "student_version": trial.version,
            "capture": task.capture.model_copy(update={"audit_rate": loop.trial_audit_rate}),
            "trial": None,
        }
    )


async def _student_runtime(
    task: Task,
    new: Deployment,
    old_engines: Mapping[tuple[str, str], StudentEngine],
    make_engine: EngineMaker,
    redactor: Redactor | None,
) -> TaskRuntime:
    """The task's student and calibrator: an engine already open for the same folder is
    shared (the old deployment's, or another task's)."""
    try:
        fingerprint = student_fingerprint(task.student)
    except FileNotFoundError as exc:
        raise DeploymentError(f"task {task.name!r}: {exc}") from None
    calibration = _calibration(task, fingerprint)
    key = (str(task.student), fingerprint)
    if key not in new.engines:
        engine = old_engines.get(key)
        if engine is None:
            engine = make_engine(task)
            await engine.start()
        new.engines[key] = engine
    return TaskRuntime(
        task,
        new.engines[key],
        calibration=calibration,
        student_fingerprint=fingerprint,
        redactor=redactor,
        student_version=task.student_version,
    )


async def _attach_teacher(
    runtime: TaskRuntime,
    new: Deployment,
    old_teachers: Mapping[_TeacherKey, OpenedTeacher],
    simulator: StartSimulator | None,
) -> None:
    task = runtime.task
    if task.teacher is None:
        return
    key: _TeacherKey = (task.teacher, task.answers)
    opened = new.teachers.get(key) or old_teachers.get(key)
    if opened is None:
        opened = await open_teacher(task.name, task.teacher, task.answers, simulator=simulator)
    new.teachers[key] = opened
    runtime.teacher, runtime.teacher_label = opened.teacher, opened.label


async def _attach_judge(
    runtime: TaskRuntime,
    new: Deployment,
    old_judges: Mapping[_JudgeKey, OpenedJudge],
    simulator: StartSimulator | None,
) -> None:
    task = runtime.task
    if task.judge is None:
        return
    key: _JudgeKey = (task.judge, task.teacher, task.prices)
    opened = new.judges.get(key) or old_judges.get(key)
    if opened is None:
        opened = await open_judge(task, simulator=simulator)
        logger.info("task %s: audits are judged by %s", task.name, opened.label)
    new.judges[key] = opened
    runtime.judge = opened.judge


async def retire(old: Deployment, keep: Deployment | None = None) -> None:
    """Close what ``old`` opened and ``keep`` does not share."""
    kept_engines = {id(e) for e in keep.engines.values()} if keep else set()
    kept_teachers = {id(t) for t in keep.teachers.values()} if keep else set()
    kept_judges = {id(j) for j in keep.judges.values()} if keep else set()
    for opened_judge in old.judges.values():
        if id(opened_judge) not in kept_judges:
            await opened_judge.aclose()
    for opened in old.teachers.values():
        if id(opened) not in kept_teachers:
            await opened.aclose()
    for engine in old.engines.values():
        if id(engine) not in kept_engines:
            await engine.aclose()
