"""Prometheus metrics, one registry per app (no process globals, so tests and apps don't mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "distillgate_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "distillgate_request_seconds",
            "Time to the complete response (non-streaming) or to the first byte (streaming).",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "distillgate_engine_batch_size",
            "Requests advanced together in one student decode step.",
            ["task"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )

        self.capture_records = Counter(
            "distillgate_capture_records",
            "Captured records by outcome: written (to Redis), spooled (to disk while Redis "
            "was unreachable), replayed (from the spool to Redis), dropped (spool full).",
            ["task", "outcome"],
            registry=self.registry,
        )
        self.capture_spool_bytes = Gauge(
            "distillgate_capture_spool_bytes",
            "Bytes of records waiting in the local spool for Redis.",
            registry=self.registry,
        )
        self.capture_queued = Gauge(
            "distillgate_capture_queued",
            "Records waiting in memory for the capture writer.",
            registry=self.registry,
        )
        self.audits = Counter(
            "distillgate_audits",
            "Accepted answers audited by the teacher, by verdict (agree, disagree).",
            ["task", "verdict"],
            registry=self.registry,
        )
        self.audit_agreement = Gauge(
            "distillgate_audit_agreement",
            "Rolling agreement of accepted student answers with the teacher (live accuracy).",
            ["task"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "distillgate_reloads",
            "Deployment reloads by outcome (ok, refused).",
            ["outcome"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
