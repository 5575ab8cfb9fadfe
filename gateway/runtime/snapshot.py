"""What the metrics' live collector renders, filled from the running pipeline: the only
place that knows which parts hold which live state (calibrators, teacher breakers, engine
queues, audits, each loop's registry, the capture backlog, the rate limiter)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from gateway.budgets import all_budgets
from gateway.engines.base import Queued
from gateway.keys import ClientKey
from gateway.limits import RateLimiter
from gateway.loop.registry import Registry
from gateway.metrics.live import (
    ROUND_OUTCOMES,
    BudgetState,
    CalibratorState,
    LoopCounts,
    ServingSnapshot,
    TaskState,
    TrialState,
)
from gateway.pipeline.answer import Pipeline
from gateway.pipeline.deployment import TaskRuntime
from gateway.teachers.resilience import ResilientTeacher

__all__ = ["serving_snapshot"]


def serving_snapshot(
    pipeline: Pipeline, limiter: RateLimiter, keys: Iterable[ClientKey] = ()
) -> ServingSnapshot:
    recorder = pipeline.recorder
    budgets: tuple[BudgetState, ...] = ()
    if pipeline.budgets is not None:
        configured = all_budgets(keys, (r.task for r in pipeline.runtimes.values()))
        budgets = tuple(
            BudgetState(
                f.budget.scope, f.budget.name, f.budget.period, f.budget.limit_usd, f.spent_usd
            )
            for f in pipeline.budgets.snapshot(configured)
        )
    return ServingSnapshot(
        tasks={name: _task_state(pipeline, r) for name, r in pipeline.runtimes.items()},
        capture_spool_bytes=None if recorder is None else recorder.spool.size_bytes,
        capture_queued=None if recorder is None else recorder.queued,
        limits_shared=limiter.shared,
        budgets=budgets,
    )


def _task_state(pipeline: Pipeline, runtime: TaskRuntime) -> TaskState:
    name = runtime.task.name
    teacher, engine = runtime.teacher, runtime.engine
    breaker = teacher if isinstance(teacher, ResilientTeacher) else None
    agreement = None
    if pipeline.audits is not None:
        rate = pipeline.audits.agreement(name).rate
        agreement = math.nan if rate is None else rate
    trial = None
    if runtime.trial is not None:
        trial = TrialState(
            runtime.trial.runtime.version_label, runtime.trial.stage, runtime.trial.share
        )
    return TaskState(
        version=runtime.version_label,
        calibrator=_calibrator(runtime),
        trial=trial,
        circuit_open=None if breaker is None else breaker.breaker.state == "open",
        teacher_retries=None if breaker is None else breaker.retries,
        queue_depth=engine.pending if isinstance(engine, Queued) else None,
        audit_agreement=agreement,
        loop=None if runtime.task.loop is None else _loop_counts(runtime),
    )


def _calibrator(runtime: TaskRuntime) -> CalibratorState | None:
    cal = runtime.calibration
    if cal is None:
        return None
    coverage = cal.metrics_after.get("coverage")
    return CalibratorState(
        version_id=cal.version_id,
        student=(runtime.student_fingerprint or "")[:19],
        threshold=cal.threshold,
        temperature=cal.temperature,
        target_accuracy=cal.target_accuracy,
        expected_escalation=None if coverage is None else 1.0 - coverage,
    )


def _loop_counts(runtime: TaskRuntime) -> LoopCounts:
    """Read from the registry the worker writes (a shared folder), so every replica reports
    the loop without the worker serving metrics of its own."""
    assert runtime.task.loop is not None
    registry = Registry(runtime.task.loop.registry, runtime.task.name)
    reports = [r for r in registry.rounds(last=1_000_000) if r.get("kind") != "trial"]
    outcomes = [str(r.get("outcome")) for r in reports]
    versions = registry.versions()
    return LoopCounts(
        rounds={outcome: outcomes.count(outcome) for outcome in ROUND_OUTCOMES},
        rollbacks=sum(v.state == "bad" for v in versions),
        promotions=sum(v.promoted_at is not None for v in versions),
    )
