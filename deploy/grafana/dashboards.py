"""Generate the Grafana dashboards (``dashboards/*.json``) from one readable table of panels.

    python deploy/grafana/dashboards.py        # rewrites deploy/grafana/dashboards/

Every query filters on the ``$task`` and ``$instance`` template variables. Queries that
would be empty while nothing is wrong (no errors, no drops) add ``or vector(0)`` so a
panel shows zero rather than "No data". ``tests/deploy/test_observability.py`` runs each
query against a real Prometheus scraping a live gateway, and checks these files are what
this script writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
SEL = 'task=~"$task", instance=~"$instance"'
RI = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: dict[str, str]  # legend -> PromQL
    unit: str = "short"
    kind: str = "timeseries"  # or stat, heatmap
    description: str = ""
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[Panel] = field(default_factory=list)


def q(metric: str, extra: str = "") -> str:
    return f"{metric}{{{SEL}{', ' + extra if extra else ''}}}"


def inst(metric: str) -> str:
    """Process-wide series carry no task label."""
    return metric + '{instance=~"$instance"}'


def quantile(p: float, metric: str, by: str) -> str:
    return f"histogram_quantile({p}, sum by (le, {by}) (rate({q(metric + '_bucket')}[{RI}])))"


ESCALATED = q("distillgate_escalations_total", 'reason!="forced"')
ANSWERED = q("distillgate_requests_total", 'route!="none"')
FAILED = q("distillgate_requests_total", 'status=~"5.."')
DROPPED = q("distillgate_capture_records_total", 'outcome="dropped"')
ROUNDS = q("distillgate_loop_rounds_total", 'outcome!="skipped"')
VERSION_DECIDED = q("distillgate_version_decisions_total")
VERSION_ESCALATED = q("distillgate_version_decisions_total", 'decision="escalated"')
AUDITED = q("distillgate_audits_total")
AGREED = q("distillgate_audits_total", 'verdict="agree"')
VERSION_AUDITED = q("distillgate_version_audits_total")
VERSION_AGREED = q("distillgate_version_audits_total", 'verdict="agree"')
ESCALATION_RATE = f"(sum(rate({ESCALATED}[{RI}])) or vector(0)) / sum(rate({ANSWERED}[{RI}]))"

DASHBOARDS = [
    Dashboard(
        "distillgate-overview",
        "distillgate / Overview",
        "Traffic, route split, escalation and error rates, latency by route, TTFT.",
        [
            Panel(
                "Requests by route",
                {"{{route}}": f"sum by (route) (rate({q('distillgate_requests_total')}[{RI}]))"},
                "reqps",
            ),
            Panel("Escalation rate", {"escalated": ESCALATION_RATE}, "percentunit"),
            Panel(
                "Error rate (5xx)",
                {
                    "5xx": f"(sum(rate({FAILED}[{RI}])) or vector(0)) / "
                    f"sum(rate({q('distillgate_requests_total')}[{RI}]))"
                },
                "percentunit",
            ),
            Panel(
                "Responses by status",
                {"{{status}}": f"sum by (status) (rate({q('distillgate_requests_total')}[{RI}]))"},
                "reqps",
            ),
            Panel(
                "Latency by route (non-streaming)",
                {
                    f"p{int(p * 100)} {{{{route}}}}": quantile(
                        p, "distillgate_request_seconds", "route"
                    )
                    for p in (0.5, 0.95, 0.99)
                },
                "s",
            ),
            Panel(
                "Time to first token (streams)",
                {
                    f"p{int(p * 100)}": quantile(
                        p, "distillgate_time_to_first_token_seconds", "task"
                    )
                    for p in (0.5, 0.99)
                },
                "s",
            ),
            Panel(
                "Student engine: queue depth and batch size",
                {
                    "queued {{task}}": f"sum by (task) ({q('distillgate_engine_queue_depth')})",
                    "batch p50": quantile(0.5, "distillgate_engine_batch_size", "task"),
                },
            ),
            Panel(
                "Refused by the engine (429/503)",
                {
                    "refused": f"sum(rate({q('distillgate_engine_rejections_total')}[{RI}])) "
                    "or vector(0)"
                },
                "reqps",
            ),
        ],
    ),
    Dashboard(
        "distillgate-routing",
        "distillgate / Routing and quality",
        "Confidence over time, the calibrated threshold, escalation reasons, live audit "
        "agreement against the calibrator's target.",
        [
            Panel(
                "Confidence distribution",
                {"{{le}}": f"sum by (le) (increase({q('distillgate_confidence_bucket')}[{RI}]))"},
                kind="heatmap",
                width=24,
            ),
            Panel(
                "Threshold and temperature",
                {
                    "threshold {{task}}": (
                        f"max by (task) ({q('distillgate_calibrator_threshold')})"
                    ),
                    "T {{task}}": f"max by (task) ({q('distillgate_calibrator_temperature')})",
                },
            ),
            Panel(
                "Live accuracy (audit agreement) vs target",
                {
                    "agreement {{task}}": f"sum by (task) (rate({AGREED}[{RI}])) / "
                    f"sum by (task) (rate({AUDITED}[{RI}]))",
                    "target {{task}}": (
                        f"max by (task) ({q('distillgate_calibrator_target_accuracy')})"
                    ),
                },
                "percentunit",
                description="Audits of every replica pooled (counters summed, then divided: "
                "a mean of replicas' rates would weigh a quiet replica like a busy one). Below "
                "target for long: the traffic drifted; recalibrate.",
            ),
            Panel(
                "Escalation rate vs calibrated expectation",
                {
                    "actual": ESCALATION_RATE,
                    "expected {{task}}": (
                        f"max by (task) ({q('distillgate_calibrator_expected_escalation')})"
                    ),
                },
                "percentunit",
            ),
            Panel(
                "Escalations by reason",
                {
                    "{{reason}}": (
                        f"sum by (reason) (rate({q('distillgate_escalations_total')}[{RI}]))"
                    )
                },
                "reqps",
            ),
            Panel(
                "Student generation time",
                {
                    f"p{int(p * 100)}": quantile(p, "distillgate_student_seconds", "task")
                    for p in (0.5, 0.99)
                },
                "s",
            ),
            Panel(
                "Audits by verdict",
                {"{{verdict}}": f"sum by (verdict) (rate({q('distillgate_audits_total')}[{RI}]))"},
                "reqps",
            ),
        ],
    ),
    Dashboard(
        "distillgate-cost",
        "distillgate / Cost",
        "Teacher spend and tokens, the estimated savings against always calling the teacher.",
        [
            Panel(
                "Teacher spend (USD per hour)",
                {
                    "{{purpose}}": (
                        f"sum by (purpose) (rate({q('distillgate_teacher_cost_usd_total')}[{RI}]))"
                        " * 3600"
                    )
                },
                "currencyUSD",
            ),
            Panel(
                "Estimated savings (USD per hour)",
                {
                    "saved": f"sum(rate({q('distillgate_estimated_savings_usd_total')}[{RI}]))"
                    " * 3600"
                },
                "currencyUSD",
            ),
            Panel(
                "Spend and savings over the range",
                {
                    "spent": f"sum(increase({q('distillgate_teacher_cost_usd_total')}[$__range]))",
                    "saved": (
                        f"sum(increase({q('distillgate_estimated_savings_usd_total')}[$__range]))"
                    ),
                },
                "currencyUSD",
                kind="stat",
            ),
            Panel(
                "Teacher cache: lookups by outcome, and what hits saved",
                {
                    "{{outcome}}": (
                        f"sum by (outcome) (rate({q('distillgate_teacher_cache_lookups_total')}"
                        f"[{RI}]))"
                    ),
                    "saved USD/h": (
                        f"sum(rate({q('distillgate_teacher_cache_saved_usd_total')}[{RI}])) * 3600"
                    ),
                },
            ),
            Panel(
                "Judge (free-text tasks): verdicts by outcome, and its spend",
                {
                    "{{outcome}}": (
                        f"sum by (outcome) (rate({q('distillgate_judge_verdicts_total')}[{RI}]))"
                    ),
                    "spent USD/h": (
                        f"sum(rate({q('distillgate_judge_cost_usd_total')}[{RI}])) * 3600"
                    ),
                },
            ),
            Panel(
                "Teacher budgets: share spent this period",
                {
                    "{{scope}} {{name}} per {{period}}": (
                        "max by (scope, name, period) "
                        f"({inst('distillgate_teacher_budget_spent_usd')}) / "
                        f"max by (scope, name, period) ({inst('distillgate_teacher_budget_usd')})"
                    ),
                },
                "percentunit",
            ),
            Panel(
                "Teacher tokens",
                {
                    "{{direction}}": (
                        f"sum by (direction) (rate({q('distillgate_teacher_tokens_total')}[{RI}]))"
                    )
                },
            ),
            Panel(
                "Teacher latency",
                {
                    f"p{int(p * 100)} {{{{purpose}}}}": quantile(
                        p, "distillgate_teacher_seconds", "purpose"
                    )
                    for p in (0.5, 0.99)
                },
                "s",
            ),
            Panel(
                "Teacher errors, retries, circuit",
                {
                    "errors": f"sum(rate({q('distillgate_teacher_errors_total')}[{RI}])) "
                    "or vector(0)",
                    "retries": f"sum(rate({q('distillgate_teacher_retries_total')}[{RI}]))",
                    "budget refusals": (
                        f"sum(rate({inst('distillgate_teacher_budget_refusals_total')}[{RI}])) "
                        "or vector(0)"
                    ),
                    "circuit open {{task}}": (
                        f"max by (task) ({q('distillgate_teacher_circuit_open')})"
                    ),
                },
            ),
        ],
    ),
    Dashboard(
        "distillgate-capture",
        "distillgate / Capture",
        "Records to the Redis stream, the disk spool while Redis is away, drops, reloads.",
        [
            Panel(
                "Captured records by outcome",
                {
                    "{{outcome}}": (
                        f"sum by (outcome) (rate({q('distillgate_capture_records_total')}[{RI}]))"
                    )
                },
                "reqps",
            ),
            Panel(
                "Spool on disk",
                {"{{instance}}": f"max by (instance) ({inst('distillgate_capture_spool_bytes')})"},
                "bytes",
            ),
            Panel(
                "Waiting in memory",
                {"{{instance}}": f"max by (instance) ({inst('distillgate_capture_queued')})"},
            ),
            Panel(
                "Dropped records and Redis errors",
                {
                    "dropped": f"sum(increase({DROPPED}[{RI}])) or vector(0)",
                    "Redis errors": (
                        f"sum(increase({inst('distillgate_capture_redis_errors_total')}[{RI}]))"
                        " or vector(0)"
                    ),
                },
            ),
            Panel(
                "Shared rate limits",
                {
                    "replicas limiting alone": (
                        f"count({inst('distillgate_rate_limits_shared')} == 0) or vector(0)"
                    ),
                    "decisions taken alone /s": (
                        f"sum(rate({inst('distillgate_rate_limit_fallback_total')}[{RI}]))"
                    ),
                },
                description="Replicas whose limits fell back to limit / replicas because the "
                "shared buckets in Redis did not answer (0 in normal running).",
            ),
            Panel(
                "Reloads",
                {
                    "{{outcome}}": "sum by (outcome) "
                    f"(increase({inst('distillgate_reloads_total')}[$__range])) or vector(0)"
                },
                kind="stat",
            ),
        ],
    ),
    Dashboard(
        "distillgate-loop",
        "distillgate / Loop",
        "The improvement loop: which version serves where, how much each version escalates "
        "and how accurate its accepted answers are (audits), rounds, promotions, rollbacks, "
        "trials. Registry-derived counters are the same on every replica: max, not sum.",
        [
            Panel(
                "Escalation rate by version",
                {
                    "{{version}}": f"sum by (version) (rate({VERSION_ESCALATED}[{RI}])) / "
                    f"sum by (version) (rate({VERSION_DECIDED}[{RI}]))"
                },
                "percentunit",
                description="Share of its own decisions each version sent to the teacher "
                "(`none`: no student yet, the teacher answers all).",
            ),
            Panel(
                "Accepted-answer accuracy by version (audits)",
                {
                    "{{version}}": f"sum by (version) (rate({VERSION_AGREED}[{RI}])) / "
                    f"sum by (version) (rate({VERSION_AUDITED}[{RI}]))",
                    "target": f"max({q('distillgate_calibrator_target_accuracy')})",
                },
                "percentunit",
                description="Agreement of audited accepted answers with the teacher; the "
                "loop rolls a version back when its SPRT says it fell below the target.",
            ),
            Panel(
                "Serving version by replica",
                {"{{version}}": f"count by (version) ({q('distillgate_student_version_info')})"},
                description="More than one line: replicas disagree (mid-switch, or one "
                "cannot load the new version).",
            ),
            Panel(
                "Replicas that disagree",
                {
                    "serving versions {{task}}": "count by (task) (count by (task, version) "
                    f"({q('distillgate_student_version_info')}))",
                    "calibrators {{task}}": "count by (task) (count by (task, version) "
                    f"({q('distillgate_calibrator_info')}))",
                },
                kind="stat",
                description="Distinct serving versions and calibrators across the replicas: "
                "1 when the fleet agrees; more for longer than a registry poll: a replica is "
                "stuck on an old version (its log says why).",
            ),
            Panel(
                "Serving version of each replica",
                {
                    "{{instance}} {{version}}": "max by (instance, version) "
                    f"({q('distillgate_student_version_info')})"
                },
                kind="stat",
            ),
            Panel(
                "Candidate on trial",
                {
                    "{{version}} {{stage}}": "max by (version, stage) "
                    f"({q('distillgate_student_trial_share')}) or vector(0)"
                },
                "percentunit",
                description="The share a candidate answers in shadow or serves as a canary.",
            ),
            Panel(
                "Rounds by outcome",
                {"{{outcome}}": f"max by (outcome) ({ROUNDS})"},
                kind="stat",
            ),
            Panel(
                "Promotions and rollbacks",
                {
                    "promotions": f"max({q('distillgate_loop_promotions_total')})",
                    "rollbacks": f"max({q('distillgate_loop_rollbacks_total')})",
                },
                kind="stat",
            ),
        ],
    ),
]


def _variables() -> dict[str, Any]:
    def variable(name: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": "query",
            "datasource": {"type": "prometheus", "uid": "prometheus"},
            "query": {"query": query, "refId": name},
            "definition": query,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "refresh": 2,
        }

    return {
        "list": [
            variable("task", "label_values(distillgate_requests_total, task)"),
            variable("instance", 'label_values(up{job="distillgate"}, instance)'),
        ]
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    panels, x, y = [], 0, 0
    for i, panel in enumerate(dashboard.panels):
        if x + panel.width > 24:
            x, y = 0, y + 8
        panels.append(
            {
                "id": i + 1,
                "type": panel.kind,
                "title": panel.title,
                "description": panel.description,
                "datasource": {"type": "prometheus", "uid": "prometheus"},
                "gridPos": {"x": x, "y": y, "w": panel.width, "h": 8},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + j),
                        "expr": expr,
                        "legendFormat": legend,
                        **({"format": "heatmap"} if panel.kind == "heatmap" else {}),
                    }
                    for j, (legend, expr) in enumerate(panel.queries.items())
                ],
            }
        )
        x += panel.width
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["distillgate"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": _variables(),
        "panels": panels,
    }


def write(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for dashboard in DASHBOARDS:
        path = out / f"{dashboard.uid}.json"
        path.write_text(json.dumps(render(dashboard), indent=2) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write():
        print(f"wrote {written}")
