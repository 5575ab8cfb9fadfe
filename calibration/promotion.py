"""The statistics that let the loop promote and roll back by itself.

``promotion_gate``: a candidate student replaces the serving one only if, on a frozen set of
prompts neither was trained or calibrated on, it meets the task's goal (``RoutingGoal``) and
beats the serving one by an exact one-sided McNemar test on the discordant pairs:

- under ``target_accuracy``: (1) a Clopper-Pearson upper bound on its accepted answers' error
  <= 1 - target at level delta (the guarantee the threshold already gives), and (2) it
  accepts more of the *same* prompts (pairs: one accepts, the other escalates);
- under ``max_escalation``: (1) it does not escalate significantly more than the budget
  (a Clopper-Pearson lower bound on its escalation share <= the budget), and (2) at that
  budget it serves more right answers itself (pairs: one accepts a right answer, the other
  does not).

A first student has nothing to beat: only (1), and it must accept something.

``AgreementSPRT``: Wald's sequential probability ratio test of the live audit agreement,
H0 p = target against H1 p = target - epsilon. Audits arrive one by one; the test stops as
soon as the evidence is clear either way, with known error rates (alpha: a good version
rolled back; beta: a bad one kept), and restarts after a decision in favour of H0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from calibration.goal import RoutingGoal
from calibration.threshold import binomial_cdf, clopper_pearson_upper

__all__ = ["AgreementSPRT", "GateResult", "Outcome", "mcnemar_greater", "promotion_gate"]


@dataclass(frozen=True)
class Outcome:
    """One prompt of the frozen set: did the student accept it, and was its answer right."""

    accepted: bool
    correct: bool


def mcnemar_greater(b: int, c: int) -> float:
    """Exact one-sided p-value that the first of a pair accepts more: b prompts only it
    accepts, c only the other; under H0 each discordant pair is a fair coin."""
    n = b + c
    if n == 0:
        return 1.0
    return 1.0 - binomial_cdf(b - 1, n, 0.5) if b > 0 else 1.0


@dataclass(frozen=True)
class GateResult:
    promote: bool
    reason: str
    n: int
    coverage: float
    accepted_accuracy: float | None
    error_bound: float
    current_coverage: float | None
    discordant_gained: int  # prompts the candidate accepts and the current escalates
    discordant_lost: int
    p_value: float | None
    test: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


NOTHING_ACCEPTED = "the candidate accepts nothing"  # too weak for the guarantee, not wrong


def promotion_gate(
    candidate: Sequence[Outcome],
    current: Sequence[Outcome] | None,
    *,
    goal: RoutingGoal,
    alpha: float,
) -> GateResult:
    """``current`` is None for a first student, else aligned with ``candidate``."""
    n = len(candidate)
    if current is not None and len(current) != n:
        raise ValueError("candidate and current need one outcome per prompt, aligned")
    delta = goal.delta
    accepted = [o for o in candidate if o.accepted]
    errors = sum(not o.correct for o in accepted)
    bound = clopper_pearson_upper(errors, len(accepted), delta)
    coverage = len(accepted) / n if n else 0.0
    accuracy = 1 - errors / len(accepted) if accepted else None
    gained = lost = 0
    p_value: float | None = None
    current_coverage: float | None = None
    if current is not None:
        # Under a budget the pairs that count are right answers served by the student.
        def won(o: Outcome) -> bool:
            return o.accepted and (o.correct or not goal.is_budget)

        pairs = list(zip(candidate, current, strict=True))
        gained = sum(won(a) and not won(b) for a, b in pairs)
        lost = sum(won(b) and not won(a) for a, b in pairs)
        p_value = mcnemar_greater(gained, lost)
        current_coverage = sum(o.accepted for o in current) / n if n else 0.0
    if goal.max_escalation is None:
        assert goal.target_accuracy is not None
        first = f"Clopper-Pearson upper bound on accepted error <= {1 - goal.target_accuracy:.4g}"
    else:
        first = f"Clopper-Pearson lower bound on escalation <= {goal.max_escalation:g}"
    test = f"{first} at delta {delta:g}" + (
        "" if current is None else f"; exact McNemar (one-sided) at {alpha:g}"
    )

    def result(promote: bool, reason: str) -> GateResult:
        return GateResult(
            promote, reason, n, coverage, accuracy, bound, current_coverage, gained, lost,
            p_value, test,
        )  # fmt: skip

    if n == 0:
        return result(False, "the frozen evaluation set is empty")
    if not accepted:
        return result(False, NOTHING_ACCEPTED)
    if goal.max_escalation is not None:
        least = 1 - clopper_pearson_upper(len(accepted), n, delta)  # escalation's lower bound
        if least > goal.max_escalation:
            return result(
                False,
                f"escalates beyond its budget: at least {least:.4f} > {goal.max_escalation:g}",
            )
        passed, more = "within the escalation budget", "more right answers served"
        worse = "serve significantly more right answers"
    else:
        assert goal.target_accuracy is not None
        limit = 1 - goal.target_accuracy
        if bound > limit:
            return result(
                False, f"accepted accuracy not guaranteed: error bound {bound:.4f} > {limit:.4f}"
            )
        passed, more = "guaranteed accuracy", "more accepted"
        worse = "accept significantly more"
    if p_value is not None and p_value >= alpha:
        return result(
            False,
            f"does not {worse} ({gained} gained, {lost} lost, p = {p_value:.3g})",
        )
    return result(True, passed + ("" if p_value is None else f" and {more}"))


Verdict = Literal["continue", "holds", "fell"]


class AgreementSPRT:
    """Wald's SPRT on Bernoulli audit outcomes (1 = the teacher agreed).

    ``update`` returns ``fell`` once the agreement is shown below the target (H1 accepted),
    ``holds`` when H0 is accepted (the statistic then restarts, so a later fall is still
    caught), else ``continue``.
    """

    def __init__(
        self, target: float, epsilon: float, *, alpha: float = 0.01, beta: float = 0.05
    ) -> None:
        if not 0 < target - epsilon < target < 1:
            raise ValueError("need 0 < target - epsilon < target < 1")
        self.p0, self.p1 = target, target - epsilon
        self.upper = math.log((1 - beta) / alpha)  # cross: accept H1 (the agreement fell)
        self.lower = math.log(beta / (1 - alpha))  # cross: accept H0 (it holds)
        self.llr = 0.0
        self.n = 0

    def update(self, agreed: bool) -> Verdict:
        self.n += 1
        if agreed:
            self.llr += math.log(self.p1 / self.p0)
        else:
            self.llr += math.log((1 - self.p1) / (1 - self.p0))
        if self.llr >= self.upper:
            return "fell"
        if self.llr <= self.lower:
            self.llr, self.n = 0.0, 0
            return "holds"
        return "continue"
