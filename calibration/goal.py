"""What a task asks of routing, as one object: calibration fits its threshold to it, the
promotion gate judges a candidate by it, the rollback watch holds a serving version to it.

Two forms. ``target_accuracy``: accepted answers at least this accurate, with probability
1 - ``delta`` (the threshold is the lowest that guarantees it). ``max_escalation``: a budget,
at most this share of traffic sent to the teacher (the threshold is the one that spends
it); the accuracy is whatever the student gives there, measured on held-out data.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RoutingGoal"]


@dataclass(frozen=True)
class RoutingGoal:
    target_accuracy: float | None = None
    max_escalation: float | None = None
    delta: float = 0.05

    def __post_init__(self) -> None:
        if (self.target_accuracy is None) == (self.max_escalation is None):
            raise ValueError("a routing goal is one of target_accuracy and max_escalation")
        if self.target_accuracy is not None and not 0 < self.target_accuracy < 1:
            raise ValueError(f"target_accuracy must be in (0, 1), got {self.target_accuracy}")
        if self.max_escalation is not None and not 0 <= self.max_escalation <= 1:
            raise ValueError(f"max_escalation must be in [0, 1], got {self.max_escalation}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")

    @property
    def is_budget(self) -> bool:
        return self.max_escalation is not None

    def agreement_target(self, measured_accuracy: float | None) -> float | None:
        """The live audit agreement a version is held to: the target accuracy, or under a
        budget the accepted accuracy its calibration measured (None: nothing measured, so
        nothing to hold it to)."""
        return self.target_accuracy if self.target_accuracy is not None else measured_accuracy

    def __str__(self) -> str:
        if self.target_accuracy is not None:
            return f"accepted accuracy >= {self.target_accuracy:g} (delta {self.delta:g})"
        return f"escalation <= {self.max_escalation:g}"
