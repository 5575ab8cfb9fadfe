"""Every series a dashboard or alert reads exists from start-up, at 0, for each task."""

from __future__ import annotations

import re

from gateway.metrics import LiveCollector, Metrics, ServingSnapshot
from gateway.metrics.live import TaskState, TrialState
from gateway.pipeline.decision import ESCALATION_REASONS, Reason, Route

# The series the dashboards and alerts read that only counted events used to create.
ONCE_MISSING = (
    'distillgate_audits_total{task="t",verdict="disagree"} 0.0',
    'distillgate_engine_rejections_total{task="t"} 0.0',
    'distillgate_estimated_savings_usd_total{task="t"} 0.0',
    'distillgate_reloads_total{outcome="refused"} 0.0',
    'distillgate_teacher_errors_total{kind="teacher_timeout",task="t"} 0.0',
    'distillgate_time_to_first_token_seconds_bucket{le="+Inf",route="teacher",task="t"} 0.0',
    'distillgate_escalations_total{reason="low_confidence",task="t"} 0.0',
    'distillgate_capture_records_total{outcome="dropped",task="t"} 0.0',
)


def test_prepared_series_exist_at_zero() -> None:
    metrics = Metrics()
    before = metrics.render().decode()
    metrics.prepare(["t"])
    after = metrics.render().decode()
    for line in ONCE_MISSING:
        assert line in after, line
        if "reloads" not in line:  # reload outcomes have no task: they exist from the start
            assert line not in before


def test_every_series_the_dashboards_read_is_prepared() -> None:
    """Each metric name in the dashboards' and alerts' queries has samples for the task
    before any request (the live state ones come from the scrape-time collector)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "deploy"
    queries = "".join(p.read_text() for p in root.rglob("*") if p.suffix in (".json", ".yml"))
    names = set(re.findall(r"distillgate_[a-z_]+", queries))
    metrics = Metrics()
    metrics.prepare(["t"])
    metrics.prepare_versions([("t", "static")])
    text = metrics.render().decode()
    live = {  # read at scrape time from what is served (LiveCollector, test_metrics.py)
        "distillgate_calibrator",
        "distillgate_teacher_circuit_open",
        "distillgate_teacher_retries",
        "distillgate_engine_queue_depth",
        "distillgate_audit_agreement",
        "distillgate_capture_spool_bytes",
        "distillgate_capture_queued",
        "distillgate_http_requests",
        "distillgate_rate_limited",
        "distillgate_rate_limits_shared",
        "distillgate_teacher_budget_",  # per configured budget (test_budgets.py)
        "distillgate_student_version_info",
        "distillgate_student_trial_share",
        "distillgate_loop_",  # from the task's registry
    }
    missing = [
        n
        for n in sorted(names)
        if not any(n.startswith(prefix) for prefix in live) and f"\n{n}" not in f"\n{text}"
    ]
    assert missing == []


def test_every_escalation_reason_the_pipeline_counts_is_prepared() -> None:
    """The series table comes from the pipeline's own enums: a reason added there (as
    ``no_student`` was, for a cold start) has its series from start-up."""
    metrics = Metrics()
    metrics.prepare(["t"])
    text = metrics.render().decode()
    for reason in ESCALATION_REASONS:
        assert f'distillgate_escalations_total{{reason="{reason}",task="t"}} 0.0' in text
    for route in Route:
        assert f'distillgate_requests_total{{route="{route}",status="200",task="t"}} 0.0' in text
    assert Reason.NO_STUDENT in ESCALATION_REASONS
    assert Reason.CONFIDENT not in ESCALATION_REASONS


def test_a_task_without_a_trial_reads_a_zero_share() -> None:
    """The trial panel has a series from start-up (version ``none``), and a trial replaces
    it rather than sitting beside it."""
    metrics = Metrics()
    snapshot = ServingSnapshot(tasks={"t": TaskState(version="v0001")})
    metrics.watch(LiveCollector(lambda: snapshot))
    idle = 'distillgate_student_trial_share{stage="none",task="t",version="none"} 0.0'
    assert idle in metrics.render().decode()
    snapshot = ServingSnapshot(
        tasks={"t": TaskState(version="v0001", trial=TrialState("v0002", "canary", 0.1))}
    )
    text = metrics.render().decode()
    assert 'distillgate_student_trial_share{stage="canary",task="t",version="v0002"} 0.1' in text
    assert idle not in text
