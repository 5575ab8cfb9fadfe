"""The accept/escalate rule: pure, so it is tested alone and replayed offline unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from calibration import RoutingGoal
from gateway.tasks import RoutingPolicy

__all__ = ["ESCALATION_REASONS", "Decision", "Reason", "Route", "decide", "routing_goal"]


def routing_goal(routing: RoutingPolicy) -> RoutingGoal:
    """The task's goal, as calibration, the gate, the rollback watch and evaluate read it."""
    return RoutingGoal(routing.target_accuracy, routing.max_escalation, routing.delta)


class Route(StrEnum):
    STUDENT = "student"
    TEACHER = "teacher"
    STUDENT_FALLBACK = "student-fallback"  # escalated, the teacher failed, the student answered
    CACHE = "cache"  # escalated, and the teacher's earlier answer to the same prompt served


class Reason(StrEnum):
    CONFIDENT = "confident"
    LOW_CONFIDENCE = "low_confidence"
    INVALID_ANSWER = "invalid_answer"
    FORCED = "forced"
    NO_TEACHER = "no_teacher"
    STUDENT_FAILED = "student_failed"  # the engine failed; the task's policy asked the teacher
    NO_STUDENT = "no_student"  # cold start: the task has no student yet, the teacher answers


# What a request may be escalated for: every reason but an accepted answer and "no teacher".
ESCALATION_REASONS = tuple(r for r in Reason if r not in (Reason.CONFIDENT, Reason.NO_TEACHER))


@dataclass(frozen=True)
class Decision:
    escalate: bool
    reason: Reason


def decide(
    *,
    confidence: float,
    threshold: float,
    valid: bool,
    forced: Literal["student", "teacher"] | None = None,
    has_teacher: bool = True,
) -> Decision:
    """Accept when confident and the answer is valid; escalate otherwise (if there is a teacher)."""
    if forced is not None:
        return Decision(forced == "teacher", Reason.FORCED)
    if not valid:
        return Decision(has_teacher, Reason.INVALID_ANSWER if has_teacher else Reason.NO_TEACHER)
    if confidence < threshold:
        return Decision(has_teacher, Reason.LOW_CONFIDENCE if has_teacher else Reason.NO_TEACHER)
    return Decision(False, Reason.CONFIDENT)
