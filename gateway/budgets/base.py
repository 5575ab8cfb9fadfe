"""What a budget is, which ones a request faces, and when each period ends (UTC)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from gateway.keys import ClientKey
from gateway.tasks import Task

__all__ = [
    "Budget",
    "BudgetFigures",
    "Hold",
    "OverBudget",
    "all_budgets",
    "budgets_of",
    "period_of",
]

Period = Literal["day", "month"]
Scope = Literal["key", "task"]


@dataclass(frozen=True)
class Budget:
    scope: Scope
    name: str  # the key's name in the key file, or the task's
    period: Period
    limit_usd: float

    @property
    def label(self) -> str:
        """``key:support-app:day``: what headers, errors and metrics call it."""
        return f"{self.scope}:{self.name}:{self.period}"

    def describe(self) -> str:
        return f"{self.scope} {self.name!r}: ${self.limit_usd:g} of teacher calls per {self.period}"


def period_of(period: Period, now: float) -> tuple[str, float]:
    """The period's id (``2026-12-06``, ``2026-12``) and when it ends (Unix seconds)."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "day":
        end = day + dt.timedelta(days=1)
        ident = day.isoformat()
    else:
        end = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        ident = day.strftime("%Y-%m")
    return ident, dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC).timestamp()


def budgets_of(task: Task, key: ClientKey | None) -> tuple[Budget, ...]:
    """The budgets one request to ``task`` by ``key`` spends from: the key's, then the task's."""
    return (_key_budgets(key) if key is not None else ()) + _task_budgets(task)


def _key_budgets(key: ClientKey) -> tuple[Budget, ...]:
    limits: tuple[tuple[Period, float | None], ...] = (
        ("day", key.teacher_usd_per_day),
        ("month", key.teacher_usd_per_month),
    )
    return tuple(Budget("key", key.name, p, limit) for p, limit in limits if limit is not None)


def _task_budgets(task: Task) -> tuple[Budget, ...]:
    if task.teacher is None:
        return ()
    limits: tuple[tuple[Period, float | None], ...] = (
        ("day", task.teacher.usd_per_day),
        ("month", task.teacher.usd_per_month),
    )
    return tuple(Budget("task", task.name, p, limit) for p, limit in limits if limit is not None)


def all_budgets(keys: Iterable[ClientKey], tasks: Iterable[Task]) -> list[Budget]:
    """Every budget configured: each key's (the key file bounds them), then each task's."""
    found: list[Budget] = []
    for key in keys:
        found += _key_budgets(key)
    for task in tasks:
        found += _task_budgets(task)
    return found


@dataclass(frozen=True)
class BudgetFigures:
    """A budget as the fleet last saw it: ``spent`` (settled calls), ``held`` (calls in
    flight, at their estimate); ``shared`` False while this replica counts alone."""

    budget: Budget
    spent_usd: float
    held_usd: float
    resets_at: float  # Unix seconds
    shared: bool | None

    @property
    def left_usd(self) -> float:
        return max(0.0, self.budget.limit_usd - self.spent_usd)

    def as_dict(self) -> dict[str, object]:
        reset = dt.datetime.fromtimestamp(self.resets_at, dt.UTC)
        return {
            "budget": self.budget.label,
            "scope": self.budget.scope,
            "name": self.budget.name,
            "period": self.budget.period,
            "limit_usd": self.budget.limit_usd,
            "spent_usd": round(self.spent_usd, 6),
            "in_flight_usd": round(self.held_usd, 6),
            "left_usd": round(self.left_usd, 6),
            "resets_at": reset.isoformat().replace("+00:00", "Z"),
            "shared": self.shared,
        }


class OverBudget(Exception):
    """A budget is spent: no teacher call for this request (the task's ``on_budget`` says
    what is served instead)."""

    def __init__(self, figures: BudgetFigures) -> None:
        super().__init__(figures.budget.describe())
        self.figures = figures

    def message(self) -> str:
        f = self.figures
        return (
            f"The teacher budget of {f.budget.describe()} is spent (${f.spent_usd:.4f}); "
            f"it resets at {f.as_dict()['resets_at']}."
        )


@dataclass
class Hold:
    """A teacher call's estimated cost, held against its budgets until ``settle``."""

    accounts: list[str]  # the budgets' Redis keys
    amount: float
    field: str  # the hold's field in each budget's hash
    in_redis: bool
    settled: bool = False
