"""Teacher budgets: what a client key, or a whole task, may spend on the teacher per UTC day
or month, counted across every replica.

``budgets_of`` lists the budgets a request faces (its key's, its task's); ``TeacherBudgets``
holds a teacher call's estimated cost while it runs, refuses one once a budget is spent, and
settles the call's real cost after (``store.py``: Redis for the fleet, this process alone
while Redis does not answer).
"""

from gateway.budgets.base import (
    Budget,
    BudgetFigures,
    Hold,
    OverBudget,
    all_budgets,
    budgets_of,
)
from gateway.budgets.store import TeacherBudgets, budget_key

__all__ = [
    "Budget",
    "BudgetFigures",
    "Hold",
    "OverBudget",
    "TeacherBudgets",
    "all_budgets",
    "budget_key",
    "budgets_of",
]
