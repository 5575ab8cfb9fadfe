"""Live state, read at scrape time: what each task serves (version, calibrator, trial,
teacher breaker, engine queue, audit agreement, loop counts), the capture backlog and
whether rate limits are shared.

The collector renders a ``ServingSnapshot`` and knows nothing of the parts it describes:
the runtime fills the snapshot (``runtime/snapshot.py``), so metrics import no engine,
teacher or registry, and a reload never leaves stale label sets behind. Every task has
every series from start-up (``distillgate_student_trial_share`` reads 0 for version
``none`` while no candidate is on trial), so no panel says "No data" for a quiet task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "BudgetState",
    "CalibratorState",
    "LiveCollector",
    "LoopCounts",
    "ServingSnapshot",
    "TaskState",
    "TrialState",
    "VLLMPassthrough",
]

ROUND_OUTCOMES = ("promoted", "on_trial", "rejected", "failed", "skipped")


@dataclass(frozen=True)
class CalibratorState:
    version_id: str
    student: str  # the student's fingerprint, shortened
    threshold: float
    temperature: float
    target_accuracy: float | None
    expected_escalation: float | None  # 1 - the coverage it was fitted to


@dataclass(frozen=True)
class TrialState:
    version: str
    stage: str  # shadow or canary
    share: float


@dataclass(frozen=True)
class LoopCounts:
    rounds: Mapping[str, int]  # by outcome
    rollbacks: int
    promotions: int


@dataclass(frozen=True)
class TaskState:
    version: str  # a registry version, `none` before the first student, `static` outside a loop
    calibrator: CalibratorState | None = None
    trial: TrialState | None = None
    circuit_open: bool | None = None  # None: the teacher has no breaker
    teacher_retries: int | None = None
    queue_depth: int | None = None  # None: the engine keeps no queue of its own
    audit_agreement: float | None = None  # NaN before the first audit; None: no audits kept
    loop: LoopCounts | None = None


@dataclass(frozen=True)
class BudgetState:
    scope: str  # key or task
    name: str
    period: str  # day or month
    limit_usd: float
    spent_usd: float  # the fleet's, as this replica last saw it


@dataclass(frozen=True)
class ServingSnapshot:
    tasks: Mapping[str, TaskState] = field(default_factory=dict)
    capture_spool_bytes: int | None = None  # None: nothing is captured
    capture_queued: int | None = None
    limits_shared: bool | None = None  # None: limits per process by design
    budgets: tuple[BudgetState, ...] = ()


class LiveCollector(Collector):
    """Renders ``read()``'s snapshot; ``None`` (still starting) renders nothing."""

    def __init__(self, read: Callable[[], ServingSnapshot | None]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        snapshot = self.read()
        if snapshot is None:
            return
        families = _Families()
        for name, task in snapshot.tasks.items():
            families.add(name, task)
        yield from families
        if snapshot.capture_spool_bytes is not None:
            yield _gauge(
                "distillgate_capture_spool_bytes",
                "Bytes of records waiting in the local spool for Redis.",
                snapshot.capture_spool_bytes,
            )
        if snapshot.capture_queued is not None:
            yield _gauge(
                "distillgate_capture_queued",
                "Records waiting in memory for the capture writer.",
                snapshot.capture_queued,
            )
        if snapshot.budgets:
            yield from _budget_families(snapshot.budgets)
        if snapshot.limits_shared is not None:
            yield _gauge(
                "distillgate_rate_limits_shared",
                "1 while client keys' limits are shared in Redis, 0 while this replica limits "
                "alone because Redis does not answer.",
                1.0 if snapshot.limits_shared else 0.0,
            )


def _budget_families(budgets: tuple[BudgetState, ...]) -> Iterator[Metric]:
    labels = ["scope", "name", "period"]
    limit = GaugeMetricFamily(
        "distillgate_teacher_budget_usd",
        "Teacher budgets configured, by scope (key, task), name and period (UTC day, month).",
        labels=labels,
    )
    spent = GaugeMetricFamily(
        "distillgate_teacher_budget_spent_usd",
        "Teacher spend counted against each budget this period, across the replicas (as "
        "this replica last saw it).",
        labels=labels,
    )
    for b in budgets:
        limit.add_metric([b.scope, b.name, b.period], b.limit_usd)
        spent.add_metric([b.scope, b.name, b.period], b.spent_usd)
    yield limit
    yield spent


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, doc)
    gauge.add_metric([], value)
    return gauge


class _Families:
    """The per-task families, declared once and filled task by task."""

    def __init__(self) -> None:
        """Long by design: one family per live series, the table a dashboard reads."""
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.info = g(
            "distillgate_calibrator_info",
            "The calibrator in service (value 1), by task, its version and its student.",
            labels=["task", "version", "student"],
        )
        self.threshold = g(
            "distillgate_calibrator_threshold", "Accept threshold on confidence.", labels=["task"]
        )
        self.temperature = g(
            "distillgate_calibrator_temperature", "Fitted temperature T.", labels=["task"]
        )
        self.target = g(
            "distillgate_calibrator_target_accuracy",
            "Accepted-answer accuracy the threshold was chosen for.",
            labels=["task"],
        )
        self.expected = g(
            "distillgate_calibrator_expected_escalation",
            "Share of traffic the calibrator expects to escalate (1 - its fitted coverage).",
            labels=["task"],
        )
        self.circuit = g(
            "distillgate_teacher_circuit_open",
            "1 while the task's teacher circuit breaker is open (calls refused).",
            labels=["task"],
        )
        self.retries = c(
            "distillgate_teacher_retries",
            "Teacher calls retried (since the teacher was opened).",
            labels=["task"],
        )
        self.queue = g(
            "distillgate_engine_queue_depth",
            "Requests waiting for or in the student engine, by task.",
            labels=["task"],
        )
        self.version = g(
            "distillgate_student_version_info",
            "The student version this replica serves (value 1): a registry version, `none` "
            "before the first student, `static` outside a loop.",
            labels=["task", "version"],
        )
        self.agreement = g(
            "distillgate_audit_agreement",
            "Rolling agreement of accepted student answers with the teacher (live accuracy).",
            labels=["task"],
        )
        self.rounds = c(
            "distillgate_loop_rounds",
            "Improvement-loop rounds by outcome (promoted, on_trial, rejected, failed, skipped), "
            "from the task's registry.",
            labels=["task", "outcome"],
        )
        self.rollbacks = c(
            "distillgate_loop_rollbacks",
            "Versions the loop marked bad and rolled back, from the task's registry.",
            labels=["task"],
        )
        self.promotions = c(
            "distillgate_loop_promotions",
            "Versions promoted to serve (after the gate, and the trial if any), from the "
            "task's registry.",
            labels=["task"],
        )
        self.trial = g(
            "distillgate_student_trial_share",
            "The share of requests a candidate on trial answers here: in shadow (off the "
            "request path) or as a canary (serving them); 0 for version `none` without one.",
            labels=["task", "version", "stage"],
        )

    def add(self, name: str, task: TaskState) -> None:
        self.version.add_metric([name, task.version], 1)
        trial = task.trial or TrialState(version="none", stage="none", share=0.0)
        self.trial.add_metric([name, trial.version, trial.stage], trial.share)
        cal = task.calibrator
        if cal is not None:
            self.info.add_metric([name, cal.version_id, cal.student], 1)
            self.threshold.add_metric([name], cal.threshold)
            self.temperature.add_metric([name], cal.temperature)
            if cal.target_accuracy is not None:
                self.target.add_metric([name], cal.target_accuracy)
            if cal.expected_escalation is not None:
                self.expected.add_metric([name], cal.expected_escalation)
        if task.circuit_open is not None:
            self.circuit.add_metric([name], 1.0 if task.circuit_open else 0.0)
        if task.teacher_retries is not None:
            self.retries.add_metric([name], float(task.teacher_retries))
        if task.queue_depth is not None:
            self.queue.add_metric([name], task.queue_depth)
        if task.audit_agreement is not None:  # NaN before the first audit: no comparison holds
            self.agreement.add_metric([name], task.audit_agreement)
        if task.loop is not None:
            for outcome in ROUND_OUTCOMES:
                self.rounds.add_metric([name, outcome], task.loop.rounds.get(outcome, 0))
            self.rollbacks.add_metric([name], task.loop.rollbacks)
            self.promotions.add_metric([name], task.loop.promotions)

    def __iter__(self) -> Iterator[Metric]:
        return iter(
            (
                self.info,
                self.threshold,
                self.temperature,
                self.target,
                self.expected,
                self.circuit,
                self.retries,
                self.queue,
                self.version,
                self.agreement,
                self.rounds,
                self.rollbacks,
                self.promotions,
                self.trial,
            )
        )


class VLLMPassthrough(Collector):
    """vLLM's own ``vllm:*`` metrics, which it registers in prometheus_client's process-wide
    registry, served on the gateway's ``/metrics`` beside ours when the engine runs
    in-process. Nothing else of that registry is passed through."""

    def collect(self) -> Iterator[Metric]:
        for metric in REGISTRY.collect():
            if metric.name.startswith("vllm:"):
                yield metric
