"""What teacher calls have cost so far, per task (this process's calls, every purpose).

The mean values an accepted answer (the call that always-teacher would have paid: the
savings series and the cost report); the largest of the recent calls is what a call in
flight holds against its budgets, so replicas asking at once overshoot by about one call.
"""

from __future__ import annotations

from collections import deque

__all__ = ["TeacherCosts"]


class TeacherCosts:
    def __init__(self, window: int = 64) -> None:
        self.window = window
        self._totals: dict[str, tuple[float, int]] = {}
        self._recent: dict[str, deque[float]] = {}

    def record(self, task: str, cost_usd: float) -> None:
        total, n = self._totals.get(task, (0.0, 0))
        self._totals[task] = (total + cost_usd, n + 1)
        self._recent.setdefault(task, deque(maxlen=self.window)).append(cost_usd)

    def mean(self, task: str) -> float:
        total, n = self._totals.get(task, (0.0, 0))
        return total / n if n else 0.0

    def estimate(self, task: str) -> float:
        recent = self._recent.get(task)
        return max(recent) if recent else 0.0
