"""The sequential tests over live evidence: is the serving version still as good as its
target, and does a candidate on trial hold?

Audits and shadow answers arrive one by one, so the loop uses Wald's sequential
probability ratio test (``calibration.AgreementSPRT``) of agreement = target against
target - epsilon: it stops early on a clear fall and its false-alarm and miss rates are
the task's ``rollback_alpha`` and ``rollback_beta``. Records are read oldest first, so every
worker and every restart reaches the same verdict on the same records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from calibration import AgreementSPRT
from gateway.capture.base import CaptureRecord
from gateway.loop.lifecycle import TrialState
from gateway.pipeline.audit import answers_agree
from gateway.tasks import Task

__all__ = ["Watch", "captured_escalation_share", "watch_escalation", "watch_serving", "watch_trial"]


@dataclass(frozen=True)
class Watch:
    version: str | None
    audits: int  # examined until the verdict
    agreement: float | None
    verdict: str  # continue | holds | fell | none


def _sprt(
    task: Task,
    version: str | None,
    agreed: Sequence[bool],
    *,
    first: bool,
    target: float | None,
    epsilon: float | None = None,
) -> Watch:
    """The SPRT over ``agreed``, oldest first: agreement ``target`` (what the task's goal
    holds the version to, ``RoutingGoal.agreement_target``; None: nothing to hold it to)
    against ``target - epsilon``. ``first``: stop at the first decision (a trial stage); else
    the test restarts after each ``holds`` and watches on (the serving version)."""
    policy = task.loop
    assert policy is not None
    if version is None or not agreed or target is None:
        return Watch(version, 0, None, "none")
    if epsilon is None:
        epsilon = min(policy.rollback_epsilon, target / 2)
    test = AgreementSPRT(target, epsilon, alpha=policy.rollback_alpha, beta=policy.rollback_beta)
    verdict = "continue"
    agreements = examined = 0
    for ok in agreed:
        agreements, examined = agreements + ok, examined + 1
        step = test.update(ok)
        if step != "continue":
            verdict = step
        if step == "fell" or (first and step == "holds"):
            break
    return Watch(version, examined, agreements / examined, verdict)


def _agreements(task: Task, records: Sequence[CaptureRecord]) -> list[bool]:
    """Each record's evidence, oldest first: the judge's verdict on a free-text task (a
    record the judge failed on is no evidence either way), else agreement with the
    teacher's answer."""
    if task.judge is not None:
        return [r.verdict for r in records if r.verdict is not None]
    judged = [r for r in records if r.teacher_answer is not None and not r.teacher_error]
    check = task.answer_check
    return [answers_agree(r.student_answer, r.teacher_answer or "", check) for r in judged]


def watch_serving(
    task: Task, version: str | None, records: Sequence[CaptureRecord], target: float | None
) -> Watch:
    """The SPRT over the serving version's audits."""
    audits = [r for r in records if r.route == "audit" and r.student_version == version]
    return _sprt(task, version, _agreements(task, audits), first=False, target=target)


def watch_trial(
    task: Task, trial: TrialState, records: Sequence[CaptureRecord], target: float | None
) -> Watch:
    """The SPRT over the candidate's evidence since its stage began: in shadow, the answers
    it would have accepted, against the teacher's; as a canary, the audits of what it served."""
    route, reasons = ("shadow", {"confident"}) if trial.stage == "shadow" else ("audit", None)
    evidence = [
        r
        for r in records
        if r.route == route
        and r.student_version == trial.version
        and r.captured_at >= trial.since
        and (reasons is None or r.reason in reasons)
    ]
    return _sprt(task, trial.version, _agreements(task, evidence), first=True, target=target)


ESCALATED = {"low_confidence", "invalid_answer"}


def captured_escalation_share(escalation: float, audit_rate: float) -> float:
    """Of the records a version leaves (every escalation, ``audit_rate`` of its accepted
    answers), the share that are escalations when it escalates ``escalation`` of traffic."""
    return escalation / (escalation + (1 - escalation) * audit_rate)


def watch_escalation(
    task: Task, version: str | None, expected: float, records: Sequence[CaptureRecord]
) -> Watch:
    """Does the serving version escalate significantly more than its calibrator expects
    (``expected``, 1 - its fitted coverage)? Accepted answers are not captured, but a fixed,
    random share of them is audited, so among a version's escalations and audits the share
    of escalations is known under each hypothesis: the SPRT of escalation = ``expected``
    against ``expected + drift_escalation`` runs on it ("agreed" = an audit). With no audits
    configured, or no room above ``expected`` for the margin: no test."""
    policy = task.loop
    assert policy is not None
    rate, margin = task.capture.audit_rate, policy.drift_escalation
    if margin <= 0 or rate <= 0 or not 0 < expected < 1 - margin:
        return Watch(version, 0, None, "none")
    seen = [
        r.route == "audit"
        for r in records
        if r.student_version == version
        and (
            r.route == "audit"
            or (r.route in ("teacher", "student-fallback") and r.reason in ESCALATED)
        )
    ]
    q0 = captured_escalation_share(expected, rate)
    q1 = captured_escalation_share(expected + margin, rate)
    if not 0 < q1 - q0 < 1 - q0:
        return Watch(version, 0, None, "none")
    return _sprt(task, version, seen, first=False, target=1 - q0, epsilon=q1 - q0)
