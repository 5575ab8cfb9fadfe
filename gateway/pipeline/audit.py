"""Audit: the student's live accuracy on what it accepted, measured against the teacher.

Escalation only ever labels low-confidence traffic. A small random share of *accepted*
requests is also sent to the teacher, in the background, and the agreement between the
two answers is tracked over a rolling window per task. That rate estimates the accepted
answers' accuracy on today's traffic: when it falls below the calibrator's target, the
calibration no longer holds (the traffic drifted) and it is time to recalibrate.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from calibration.threshold import clopper_pearson_upper
from gateway.answers import AnswerCheck

__all__ = ["Agreement", "AuditTracker", "answers_agree"]


def answers_agree(student: str, teacher: str, check: AnswerCheck) -> bool:
    """Exact agreement after trimming (a structured answer: the same JSON value): right for
    bounded answers (labels, fields). For free text it undercounts, so the rate is a lower
    bound there."""
    return check.same(student.strip(), teacher.strip())


@dataclass(frozen=True)
class Agreement:
    rate: float | None  # None before the first audit
    n: int
    lower: float | None  # one-sided 95 % Clopper-Pearson lower bound

    def to_json(self) -> dict[str, float | int | None]:
        return {"agreement": self.rate, "n": self.n, "lower_bound": self.lower}


class AuditTracker:
    """Samples accepted requests at ``rate`` and keeps the last ``window`` verdicts per task."""

    def __init__(
        self,
        *,
        window: int = 500,
        seed: int | None = None,
        on_observe: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.window = window
        self.on_observe = on_observe
        self._rng = random.Random(seed)
        self._verdicts: dict[str, deque[bool]] = {}

    def sample(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def observe(self, task: str, agreed: bool) -> None:
        self._verdicts.setdefault(task, deque(maxlen=self.window)).append(agreed)
        if self.on_observe is not None:
            self.on_observe(task, agreed)

    def agreement(self, task: str) -> Agreement:
        verdicts = self._verdicts.get(task)
        if not verdicts:
            return Agreement(None, 0, None)
        n, k = len(verdicts), sum(verdicts)
        disagreed_upper = clopper_pearson_upper(n - k, n, 0.05)
        return Agreement(k / n, n, 1.0 - disagreed_upper)
