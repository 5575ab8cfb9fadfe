"""The gateway's series: one registry per app (no process globals, so tests and apps don't
mix), each series declared once in ``Metrics.__init__`` and counted where its event happens
(the pipeline's observer: ``student_answered``, ``escalated``, ``teacher_answered``,
``decided``, ``audited``...).

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR``: counters and histograms
are then summed over the workers; live state (``live.py``) is the scraped worker's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway.budgets import Budget
from gateway.errors import TeacherError, TeacherTimeout, TeacherUnavailable
from gateway.metrics.live import VLLMPassthrough
from gateway.pipeline.decision import ESCALATION_REASONS, Route

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)


ROUTES = tuple(r.value for r in Route)
REASONS = tuple(r.value for r in ESCALATION_REASONS)
TEACHER_ERRORS = tuple(str(e.code) for e in (TeacherError, TeacherTimeout, TeacherUnavailable))
PURPOSES = ("escalation", "audit", "shadow")
BUDGET_PURPOSES = (*PURPOSES, "judge")  # a judge model's calls are held too
VERDICTS = ("accepted", "rejected", "failed")
CAPTURE_OUTCOMES = ("written", "spooled", "replayed", "dropped")
CACHE_OUTCOMES = ("hit", "miss", "unavailable")


class Metrics:
    """The gateway's series, each one line of the table below; ``prepare`` creates every
    known label set of a task at 0, so a dashboard or alert never reads "no data" for a
    count that simply has not happened yet."""

    def __init__(self) -> None:
        """Long by design: one call per series, the table every dashboard reads; splitting it would
        scatter the names."""
        self.registry = CollectorRegistry()
        c, h = self._counter, self._histogram
        self.http_requests = c(
            "http_requests",
            "HTTP responses by path (the /v1/ endpoints, else 'other') and status.",
            "path",
            "status",
        )
        self.requests = c(
            "requests",
            "Completion requests by task, route (student, teacher, student-fallback, none "
            "when refused) and HTTP status.",
            "task",
            "route",
            "status",
        )
        self.request_seconds = h(
            "request_seconds",
            "Time to the whole response (non-streaming) by task and route.",
            "task",
            "route",
        )
        self.ttft_seconds = h(
            "time_to_first_token_seconds",
            "Streams: time from the request to the first content chunk, by task and route.",
            "task",
            "route",
        )
        self.student_seconds = h(
            "student_seconds", "Student generation time per request (queueing included).", "task"
        )
        self.batch_size = h(
            "engine_batch_size",
            "Requests advanced together in one student decode step.",
            "task",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.engine_rejections = c(
            "engine_rejections",
            "Requests refused because the student's queue was full (429) or closing (503).",
            "task",
        )
        self.rate_limited = c(
            "rate_limited",
            "Requests refused (429) because a client key spent its allowance, by key name "
            "and limit (requests, tokens).",
            "key",
            "limit",
        )
        self.rate_limit_fallback = c(
            "rate_limit_fallback",
            "Rate-limit decisions this replica took alone (limit / expected replicas) because "
            "the shared limits in Redis did not answer.",
        )
        self.budget_fallback = c(
            "teacher_budget_fallback",
            "Teacher-budget decisions this replica took alone (its share of what was left) "
            "because the budgets in Redis did not answer.",
        )
        self.confidence = h(
            "confidence",
            "Calibrated confidence of the student's answers, by task.",
            "task",
            buckets=CONFIDENCE_BUCKETS,
        )
        self.escalations = c(
            "escalations",
            "Requests sent to the teacher, by reason (low_confidence, invalid_answer, forced).",
            "task",
            "reason",
        )
        self.teacher_seconds = h(
            "teacher_seconds",
            "Teacher answer time (retries included), by task and purpose "
            "(escalation, audit, shadow).",
            "task",
            "purpose",
        )
        self.teacher_errors = c(
            "teacher_errors",
            "Teacher failures by kind (teacher_timeout, teacher_unavailable, teacher_error).",
            "task",
            "kind",
        )
        self.teacher_tokens = c(
            "teacher_tokens",
            "Teacher tokens by direction (input, output) and purpose.",
            "task",
            "direction",
            "purpose",
        )
        self.teacher_cost = c(
            "teacher_cost_usd",
            "Teacher spend in USD at the task's prices, by purpose (escalation, audit, shadow).",
            "task",
            "purpose",
        )
        self.savings = c(
            "estimated_savings_usd",
            "Teacher spend avoided by the student's accepted answers: each valued at the "
            "task's mean cost of a teacher call so far (what always-teacher would have paid).",
            "task",
        )
        self.teacher_cache = c(
            "teacher_cache_lookups",
            "Escalations that looked their teacher answer up in the cache, by outcome (hit, "
            "miss, unavailable: Redis did not answer, so the teacher was asked).",
            "task",
            "outcome",
        )
        self.cache_savings = c(
            "teacher_cache_saved_usd",
            "Teacher spend the cache avoided: each hit's tokens at the task's prices.",
            "task",
        )
        self.judge_verdicts = c(
            "judge_verdicts",
            "A free-text task's judge on audited and shadow answers, by outcome (accepted, "
            "rejected, failed: no verdict, so not acceptable).",
            "task",
            "outcome",
        )
        self.judge_cost = c(
            "judge_cost_usd",
            "What the judge's calls cost, at the task's teacher prices (a program judge: 0).",
            "task",
        )
        self.budget_refusals = c(
            "teacher_budget_refusals",
            "Teacher calls not made because a budget was spent, by budget (scope key or "
            "task, its name, period day or month) and purpose (escalation, audit, shadow).",
            "scope",
            "name",
            "period",
            "purpose",
        )
        self.capture_records = c(
            "capture_records",
            "Captured records by outcome: written (to Redis), spooled (to disk while Redis "
            "was unreachable), replayed (from the spool to Redis), dropped (spool full).",
            "task",
            "outcome",
        )
        self.capture_sink_errors = c(
            "capture_redis_errors",
            "Capture writes to Redis that failed or timed out (the batch went to the spool).",
        )
        self.audits = c(
            "audits",
            "Accepted answers audited by the teacher, by verdict (agree, disagree).",
            "task",
            "verdict",
        )
        self.version_decisions = c(
            "version_decisions",
            "Accept/escalate decisions (accepted, escalated) by the student version that made "
            "them: a registry version, `none` before the first student, a canary's on its share.",
            "task",
            "version",
            "decision",
        )
        self.version_audits = c(
            "version_audits",
            "Audits of accepted answers by the version that accepted them, by verdict.",
            "task",
            "version",
            "verdict",
        )
        self.reloads = c("reloads", "Deployment reloads by outcome (ok, refused).", "outcome")
        for outcome in ("ok", "refused"):
            self.reloads.labels(outcome)
        self.capture_sink_errors.inc(0)
        self.rate_limit_fallback.inc(0)
        self.budget_fallback.inc(0)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._live: list[Collector] = []
        self.watch(VLLMPassthrough())

    def _counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(f"distillgate_{name}", doc, labels, registry=self.registry)

    def _histogram(
        self, name: str, doc: str, *labels: str, buckets: tuple[float, ...] = LATENCY_BUCKETS
    ) -> Histogram:
        return Histogram(
            f"distillgate_{name}", doc, labels, buckets=buckets, registry=self.registry
        )

    def prepare(self, tasks: Iterable[str]) -> None:
        """Create each task's known label sets at 0 (at start-up and on every reload)."""
        for task in tasks:
            per_task: tuple[Counter | Histogram, ...] = (
                self.student_seconds,
                self.confidence,
                self.batch_size,
                self.engine_rejections,
                self.savings,
                self.cache_savings,
                self.judge_cost,
            )
            for metric in per_task:
                metric.labels(task)
            for route in ROUTES:
                self.requests.labels(task, route, "200")
                self.request_seconds.labels(task, route)
                self.ttft_seconds.labels(task, route)
            for reason in REASONS:
                self.escalations.labels(task, reason)
            for kind in TEACHER_ERRORS:
                self.teacher_errors.labels(task, kind)
            for purpose in PURPOSES:
                self.teacher_seconds.labels(task, purpose)
                self.teacher_cost.labels(task, purpose)
                for direction in ("input", "output"):
                    self.teacher_tokens.labels(task, direction, purpose)
            for outcome in CAPTURE_OUTCOMES:
                self.capture_records.labels(task, outcome)
            for outcome in CACHE_OUTCOMES:
                self.teacher_cache.labels(task, outcome)
            for outcome in VERDICTS:
                self.judge_verdicts.labels(task, outcome)
            for verdict in ("agree", "disagree"):
                self.audits.labels(task, verdict)

    def prepare_budgets(self, budgets: Iterable[Budget]) -> None:
        """Create each configured budget's refusal series at 0, for every purpose."""
        for b in budgets:
            for purpose in BUDGET_PURPOSES:
                self.child(self.budget_refusals, b.scope, b.name, b.period, purpose)

    def prepare_versions(self, served: Iterable[tuple[str, str]]) -> None:
        """Create the per-version series of each (task, version) served at 0: the serving
        version and a candidate on trial, at start-up and on every reload."""
        for task, version in served:
            self.decided_series(task, version)
            self.audit_series(task, version)

    def decided_series(self, task: str, version: str) -> tuple[Any, Any]:
        decisions = self.version_decisions
        return (
            self.child(decisions, task, version, "accepted"),
            self.child(decisions, task, version, "escalated"),
        )

    def audit_series(self, task: str, version: str) -> tuple[Any, Any]:
        audits = self.version_audits
        return self.child(audits, task, version, "agree"), self.child(
            audits, task, version, "disagree"
        )

    # -- events (the pipeline's observer, ``pipeline/base.py``) ----------------------------
    def student_answered(self, task: str, seconds: float, confidence: float) -> None:
        self.child(self.student_seconds, task).observe(seconds)
        self.child(self.confidence, task).observe(confidence)

    def escalated(self, task: str, reason: str) -> None:
        self.child(self.escalations, task, reason).inc()

    def teacher_failed(self, task: str, kind: str) -> None:
        self.child(self.teacher_errors, task, kind).inc()

    def cache_looked_up(self, task: str, outcome: str) -> None:
        self.child(self.teacher_cache, task, outcome).inc()

    def served(self, task: str, key: str, route: str, saved_usd: float) -> None:
        if saved_usd:
            self.child(self.savings, task).inc(saved_usd)
            if route == Route.CACHE:
                self.child(self.cache_savings, task).inc(saved_usd)

    def budget_refused(self, budget: str, purpose: str) -> None:
        scope, _, rest = budget.partition(":")
        name, _, period = rest.rpartition(":")
        self.child(self.budget_refusals, scope, name, period, purpose).inc()

    def teacher_answered(
        self,
        task: str,
        purpose: str,
        *,
        key: str,
        seconds: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        self.teacher_seconds.labels(task, purpose).observe(seconds)
        self.teacher_tokens.labels(task, "input", purpose).inc(input_tokens)
        self.teacher_tokens.labels(task, "output", purpose).inc(output_tokens)
        self.teacher_cost.labels(task, purpose).inc(cost_usd)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, resolved once: on the request path ``labels`` would
        re-validate, stringify and take a lock on every call (label sets are bounded by
        tasks, routes and statuses)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def decided(self, task: str, version: str, accepted: bool) -> None:
        # Both series exist from a version's first decision, so a rate of 0 reads 0.
        yes, no = self.decided_series(task, version)
        (yes if accepted else no).inc()

    def audited(self, task: str, version: str, agreed: bool) -> None:
        yes, no = self.audit_series(task, version)
        (yes if agreed else no).inc()

    def judged(self, task: str, outcome: str, cost_usd: float) -> None:
        self.child(self.judge_verdicts, task, outcome).inc()
        if cost_usd:
            self.child(self.judge_cost, task).inc(cost_usd)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            for collector in self._live:
                merged.register(collector)
            return generate_latest(merged)
        return generate_latest(self.registry)

    def watch(self, collector: Collector) -> None:
        """Register a scrape-time collector of live state."""
        self._live.append(collector)
        self.registry.register(collector)
