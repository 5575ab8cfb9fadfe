"""One round of the loop: data → candidate → calibrator → gate → promote (or not).

A round adds its candidate to the registry before training it, then moves it by the
lifecycle's events (``lifecycle.py``): ``build_failed`` (a trainer that crashes or times out,
a folder that does not load, a calibrator that cannot be fitted), ``gate_failed`` or
``gate_passed`` (on to its trial, or serving). Candidates a dead round left behind are
rejected first (``interrupted``): the round runs under the task's lease, so no other round
is building them. Too little data ends the round before it adds anything; whatever
happens, the serving student serves on until a transition says otherwise.

A free-text task (one with a ``[judge]``) is calibrated and gated on its judge's verdicts:
an answer is right when the judge accepts it. Each distinct answer is judged once (the
registry keeps the verdicts, so the serving student's answers to the frozen set are not
judged again each round), within the task's ``max_calls_per_round``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibration import (
    NOTHING_ACCEPTED,
    Calibration,
    GateResult,
    Outcome,
    RoutingGoal,
    load_calibration,
    promotion_gate,
    save_calibration,
    student_fingerprint,
)
from gateway.capture.base import CaptureRecord
from gateway.engines.factory import replay_engine
from gateway.engines.student_folder import is_student
from gateway.examples import Example, read_examples, write_examples
from gateway.jobs.calibrate import MIN_EXAMPLES, fit_calibration, score_set
from gateway.jobs.judged import judged
from gateway.jobs.replay import replay
from gateway.judges.base import Judge
from gateway.judges.verdicts import JudgeBudgetSpent, VerdictFile, Verdicts
from gateway.loop.data import RoundData, round_data, with_labelled
from gateway.loop.lifecycle import Event, State, first_stage
from gateway.loop.registry import Manifest, Registry, now
from gateway.loop.trainers import Trainer, TrainerFailed, TrainJob
from gateway.pipeline.decision import decide, routing_goal
from gateway.tasks import LoopPolicy, Task

__all__ = ["RoundReport", "judge", "run_round"]

logger = logging.getLogger(__name__)


@dataclass
class RoundReport:
    task: str
    trigger: str
    outcome: str = "skipped"  # skipped | failed | rejected | on_trial | promoted
    reason: str = ""
    round_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: str = field(default_factory=now)
    finished_at: str = ""
    candidate: str | None = None
    parent: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    judge: dict[str, Any] = field(default_factory=dict)  # a free-text task's judge calls
    seconds: dict[str, float] = field(default_factory=dict)
    records_seen: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _labelled(path: Path | None) -> list[Example]:
    return read_examples(path) if path is not None and path.is_file() else []


async def judge(
    student: Path,
    calibration: Calibration,
    task: Task,
    examples: Sequence[Example],
    verdicts: Verdicts | None = None,
) -> list[Outcome]:
    """What serving would do with each prompt: accept or escalate by the same rule
    (``pipeline.decision.decide``) at the same temperature, on the task's engine kind, and
    whether the answer is right: the reference's answer, or ``verdicts`` (a free-text
    task: the judge accepts it; only the answers the student would keep are judged)."""
    engine = replay_engine(task)(student, len(examples) + 1)
    await engine.start()
    try:
        answers = await replay(
            engine,
            examples,
            max_tokens=task.generation.max_tokens,
            prompt=task.prompt,
            prefix="gate",
            temperature=calibration.temperature,
            json_schema=task.answer_check.schema_json,
        )
    finally:
        await engine.aclose()
    accepted = []
    for answer in answers:
        valid = answer.finish_reason == "stop" and task.answer_check.valid(answer.text)
        decision = decide(
            confidence=calibration.confidence(answer.scaled_logprobs),
            threshold=calibration.threshold,
            valid=valid,
            forced=None,
            has_teacher=True,
        )
        accepted.append(not decision.escalate)
    if verdicts is None:
        correct = [
            task.answer_check.same(a.text, e.answer) for a, e in zip(answers, examples, strict=True)
        ]
    else:  # the gate counts right answers among the accepted ones only
        kept = [i for i, ok in enumerate(accepted) if ok]
        pairs = [(examples[i].chat()[-1]["content"], answers[i].text) for i in kept]
        right = dict(zip(kept, await verdicts.acceptable(pairs), strict=True))
        correct = [right.get(i, False) for i in range(len(answers))]
    return [Outcome(accepted=a, correct=c) for a, c in zip(accepted, correct, strict=True)]


async def run_round(
    task: Task,
    registry: Registry,
    records: Sequence[CaptureRecord],
    trainer: Trainer,
    *,
    trigger: str,
    judge_with: Judge | None = None,
) -> RoundReport:
    """The round's script: each step a call, and a report of where and why it stopped.
    ``judge_with``: a free-text task's judge (required there)."""
    policy: LoopPolicy | None = task.loop
    assert policy is not None, "a round needs the task's [loop] section"
    verdicts = _verdicts(task, registry, judge_with)
    report = RoundReport(task.name, trigger, records_seen=len(records))
    for left in registry.candidates():
        registry.reject(left, Event.INTERRUPTED, "its round died before the gate judged it")
    try:
        sets = _round_sets(task, records)
    except (OSError, ValueError) as exc:
        report.outcome, report.reason = "failed", f"a labelled file cannot be read: {exc}"
        return _finish(registry, report)
    report.data = sets.summary()
    skip = _skip_reason(task, sets)
    if skip is not None:
        report.reason = skip
        return _finish(registry, report)

    serving = registry.serving()
    parent = serving.version if serving else None
    # Outside the registry, a task's own student (if it has one) is what a candidate must beat
    # and what it continues from.
    current_dir, current_calibrator = _current(task, registry, parent)
    version = registry.next_version()
    report.candidate, report.parent = version, parent
    folder = registry.add(
        Manifest(version, parent, now(), report.data), reason=f"round {report.round_id}: {trigger}"
    )
    job = _train_job(task, sets, folder, parent=current_dir or _weak_candidate(registry))
    try:
        with _timed(report, "train"):
            student = await trainer.train(job)
            student_fingerprint(student)  # a folder that does not load fails here
    except (TrainerFailed, OSError, ValueError) as exc:
        return _build_failed(registry, report, folder, f"training failed: {exc}")

    goal = routing_goal(task.routing)
    try:
        with _timed(report, "calibrate"):
            calibration = await _calibrate(task, student, sets.calibrate, goal, verdicts)
            save_calibration(calibration, folder / "calibration.json")
    except Exception as exc:  # a candidate that cannot be run or calibrated is rejected
        report.judge = verdicts.summary() if verdicts else {}
        return _build_failed(registry, report, folder, f"calibration failed: {exc}")
    report.calibration = _calibration_summary(calibration)

    try:
        with _timed(report, "gate"):
            candidate = await judge(student, calibration, task, sets.evaluate, verdicts)
            current = None
            if current_dir is not None and current_calibrator is not None:
                current_calibration = load_calibration(current_calibrator)
                current = await judge(
                    current_dir, current_calibration, task, sets.evaluate, verdicts
                )
            result = promotion_gate(candidate, current, goal=goal, alpha=policy.gate_alpha)
    except JudgeBudgetSpent as exc:
        report.judge = verdicts.summary() if verdicts else {}
        registry.reject(version, Event.GATE_FAILED, f"not judged: {exc}", report.judge)
        report.outcome, report.reason = "rejected", f"not judged: {exc}"
        return _finish(registry, report)
    report.judge = verdicts.summary() if verdicts else {}
    _apply_verdict(registry, report, policy, result, calibration, goal)
    return _finish(registry, report)


def _verdicts(task: Task, registry: Registry, judge_with: Judge | None) -> Verdicts | None:
    """A free-text task's verdicts for this round: its budget of calls, the registry's
    verdicts of earlier rounds."""
    if task.judge is None:
        return None
    if judge_with is None:
        raise ValueError(f"task {task.name!r} is judged: its rounds need the judge")
    return Verdicts(
        judge_with,
        task.judge.rubric,
        max_calls=task.judge.max_calls_per_round,
        store=VerdictFile(registry.dir / "verdicts.jsonl"),
    )


@dataclass(frozen=True)
class _RoundSets:
    """The round's data: captured pairs split by prompt hash, each part with the task's
    labelled files added."""

    data: RoundData
    train: list[Example]
    calibrate: list[Example]
    evaluate: list[Example]
    held_out: list[Example]  # what the trainer keeps its best checkpoint by

    def summary(self) -> dict[str, Any]:
        return self.data.summary() | {
            "train_with_labelled": len(self.train),
            "calibrate_with_labelled": len(self.calibrate),
            "evaluate_with_labelled": len(self.evaluate),
        }


def _round_sets(task: Task, records: Sequence[CaptureRecord]) -> _RoundSets:
    assert task.loop is not None
    data = round_data(records, task, eval_share=task.loop.eval_share)
    build = task.build
    train, calibrate, evaluate = with_labelled(
        data,
        train=_labelled(build.train if build else None),
        calibrate=_labelled(task.routing.calibration_data),
        evaluate=_labelled(task.loop.eval_data),
    )
    held_out = _labelled(build.held_out if build else None) or calibrate
    return _RoundSets(data, train, calibrate, evaluate, held_out)


def _skip_reason(task: Task, sets: _RoundSets) -> str | None:
    policy = task.loop
    assert policy is not None
    train, data = sets.train, sets.data
    if len(train) + len(data.calibrate) + len(data.evaluate) < policy.min_pairs:
        return f"too little data: {len(train)} pairs to train on (at least {policy.min_pairs})"
    if len({e.answer for e in train}) < 2:
        return "the training data is all one answer"
    if len(sets.calibrate) < MIN_EXAMPLES:
        return (
            f"too little data to calibrate: {len(sets.calibrate)} pairs (at least {MIN_EXAMPLES})"
        )
    if not sets.evaluate:
        return "no frozen evaluation data yet"
    return None


def _train_job(task: Task, sets: _RoundSets, folder: Path, parent: Path | None) -> TrainJob:
    """The trainer's inputs, written into the candidate's folder (a command trainer reads
    files, not objects)."""
    work = folder / "round"
    write_examples(work / "train.jsonl", sets.train)
    write_examples(work / "held_out.jsonl", sets.held_out)
    answers = sorted(set(task.answers or ()) | sets.data.answers | {e.answer for e in sets.train})
    (work / "answers.json").write_text(json.dumps(answers))
    return TrainJob(
        train=work / "train.jsonl",
        held_out=work / "held_out.jsonl",
        out=folder / "student",
        parent=parent,
        answers=work / "answers.json",
        log=work / "train.log",
    )


async def _calibrate(
    task: Task,
    student: Path,
    examples: Sequence[Example],
    goal: RoutingGoal,
    verdicts: Verdicts | None,
) -> Calibration:
    scored = await score_set(
        student,
        examples,
        max_tokens=task.generation.max_tokens,
        prompt=task.prompt,
        check=task.answer_check,
        engine=replay_engine(task),
    )
    if verdicts is not None:  # right = the judge accepts the student's own answer
        scored = await judged(scored, verdicts)
    calibration, _ = fit_calibration(scored, student, goal=goal)
    return calibration


def _calibration_summary(calibration: Calibration) -> dict[str, Any]:
    return {
        "version": calibration.version_id,
        "temperature": calibration.temperature,
        "threshold": calibration.threshold,
        "certified": calibration.certified,
        "n": calibration.n_temperature + calibration.n_threshold,
    }


def _apply_verdict(
    registry: Registry,
    report: RoundReport,
    policy: LoopPolicy,
    result: GateResult,
    calibration: Calibration,
    goal: RoutingGoal,
) -> None:
    """The gate's verdict as the candidate's transition, with the evidence it rests on."""
    version = report.candidate
    assert version is not None
    report.gate = result.as_dict()
    evidence = report.gate | {"calibration": report.calibration}
    if result.promote:
        stage = first_stage(policy, version, time.time())
        registry.pass_gate(version, stage, result.reason, evidence)
        report.outcome = "promoted" if stage is None else "on_trial"
        report.reason = result.reason
        return
    registry.reject(version, Event.GATE_FAILED, result.reason, evidence)
    report.outcome, report.reason = "rejected", result.reason
    if result.reason == NOTHING_ACCEPTED:  # too weak yet: say how far, and what comes next
        accuracy = calibration.metrics_after.get("accuracy", float("nan"))
        report.reason += (
            f": no threshold is certified for {goal} (its answers {accuracy:.3f} right "
            f"on {calibration.n_threshold} held-out prompts, T {calibration.temperature:.2f})"
            "; the teacher answers meanwhile, and the next round continues its training"
        )


@contextmanager
def _timed(report: RoundReport, step: str) -> Iterator[None]:
    """A step's seconds in the report, when it completes."""
    started = time.monotonic()
    yield
    report.seconds[step] = round(time.monotonic() - started, 1)


def _weak_candidate(registry: Registry) -> Path | None:
    """Before a first student, the last candidate if it was only too weak (it accepted
    nothing at the guarantee): the next round continues its training rather than starting
    over, so a cold start whose budget per round is short still gets there. The gate judges
    the result as it judges any candidate."""
    judged = [v for v in registry.versions() if v.judged]
    if not judged or judged[-1].state != State.REJECTED or judged[-1].reason != NOTHING_ACCEPTED:
        return None
    student = registry.student_dir(judged[-1].name)
    return student if is_student(student) else None


def _current(task: Task, registry: Registry, parent: str | None) -> tuple[Path | None, Path | None]:
    """The serving student's folder and calibrator: the registry's version, else the task's
    own folder (its calibrator, if it has one), else none (a first student)."""
    if parent is not None:
        return registry.student_dir(parent), registry.calibrator(parent)
    if is_student(task.student):
        calibrator = task.calibrator_path
        return task.student, calibrator if calibrator.is_file() else None
    return None, None


def _build_failed(
    registry: Registry, report: RoundReport, folder: Path, reason: str
) -> RoundReport:
    """The candidate is rejected with the reason; its half-built student is removed."""
    assert report.candidate is not None
    registry.reject(report.candidate, Event.BUILD_FAILED, reason)
    shutil.rmtree(folder / "student", ignore_errors=True)
    report.outcome, report.reason = "failed", reason
    return _finish(registry, report)


def _finish(registry: Registry, report: RoundReport) -> RoundReport:
    """The report, then the cursor: a worker that dies between the candidate's last
    transition and the cursor runs the round again on the same records, nothing worse."""
    report.finished_at = now()
    last = registry.rounds(1)
    repeated = report.outcome == "skipped" and bool(last) and last[-1]["reason"] == report.reason
    if not repeated:  # a worker polling a task that is short of data logs that once
        registry.record_round(report.as_dict())
    if report.outcome != "skipped":
        registry.advance_cursor(report.records_seen)
    logger.info(
        "task %s: round %s %s (%s)%s",
        report.task,
        report.round_id,
        report.outcome,
        report.reason,
        f", candidate {report.candidate}" if report.candidate else "",
    )
    return report
