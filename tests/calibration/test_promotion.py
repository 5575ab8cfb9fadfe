"""The loop's statistics: the promotion gate and the sequential rollback test."""

from __future__ import annotations

import random
from math import comb

import pytest

from calibration import AgreementSPRT, Outcome, RoutingGoal, mcnemar_greater, promotion_gate


def test_mcnemar_is_the_binomial_tail_of_the_discordant_pairs() -> None:
    assert mcnemar_greater(0, 0) == 1.0
    assert mcnemar_greater(0, 5) == 1.0
    b, c = 9, 2
    exact = sum(comb(11, k) for k in range(b, 12)) / 2**11
    assert mcnemar_greater(b, c) == pytest.approx(exact, rel=1e-9)
    assert mcnemar_greater(10, 0) == pytest.approx(2**-10, rel=1e-9)
    assert mcnemar_greater(5, 5) > 0.5


def outcomes(accepted: int, wrong: int, escalated: int) -> list[Outcome]:
    return (
        [Outcome(True, True)] * (accepted - wrong)
        + [Outcome(True, False)] * wrong
        + [Outcome(False, True)] * escalated
    )


def test_a_first_student_needs_only_the_accuracy_guarantee() -> None:
    good = promotion_gate(
        outcomes(200, 1, 100), None, goal=RoutingGoal(0.95, delta=0.05), alpha=0.05
    )
    assert good.promote and good.p_value is None and good.error_bound < 0.05
    assert good.coverage == pytest.approx(200 / 300)
    sloppy = promotion_gate(
        outcomes(200, 20, 100), None, goal=RoutingGoal(0.95, delta=0.05), alpha=0.05
    )
    assert not sloppy.promote and "not guaranteed" in sloppy.reason
    nothing = promotion_gate(
        outcomes(0, 0, 50), None, goal=RoutingGoal(0.9, delta=0.05), alpha=0.05
    )
    assert not nothing.promote and nothing.reason == "the candidate accepts nothing"


def test_a_later_student_must_accept_significantly_more_of_the_same_prompts() -> None:
    current = outcomes(100, 0, 200)
    better = outcomes(160, 0, 140)  # accepts the current's 100 and 60 more
    result = promotion_gate(better, current, goal=RoutingGoal(0.95, delta=0.05), alpha=0.05)
    assert result.promote and (result.discordant_gained, result.discordant_lost) == (60, 0)
    assert result.p_value is not None and result.p_value < 1e-9
    same = promotion_gate(current, current, goal=RoutingGoal(0.95, delta=0.05), alpha=0.05)
    assert not same.promote and "significantly" in same.reason
    slightly = outcomes(102, 0, 198)
    close = promotion_gate(slightly, current, goal=RoutingGoal(0.95, delta=0.05), alpha=0.05)
    assert not close.promote and close.p_value == pytest.approx(0.25)


def test_a_budget_task_is_gated_on_its_budget_not_on_an_accuracy_it_never_asked_for() -> None:
    budget = RoutingGoal(max_escalation=0.3)
    fair = outcomes(220, 40, 80)  # 82 % right where it answers, escalates 27 %
    first = promotion_gate(fair, None, goal=budget, alpha=0.05)
    assert first.promote and first.reason == "within the escalation budget"
    assert not promotion_gate(fair, None, goal=RoutingGoal(0.97), alpha=0.05).promote
    spender = outcomes(150, 10, 150)  # escalates half the traffic
    over = promotion_gate(spender, None, goal=budget, alpha=0.05)
    assert not over.promote and "beyond its budget" in over.reason
    # At the same budget, a later student must serve more right answers itself.
    current = outcomes(220, 40, 80)
    better = outcomes(220, 5, 80)  # the same prompts accepted, 35 more of them right
    result = promotion_gate(better, current, goal=budget, alpha=0.05)
    assert result.promote and result.reason.endswith("and more right answers served")
    assert (result.discordant_gained, result.discordant_lost) == (35, 0)
    same = promotion_gate(current, current, goal=budget, alpha=0.05)
    assert not same.promote and "serve significantly more right answers" in same.reason


def test_the_goal_is_one_form_or_the_other() -> None:
    with pytest.raises(ValueError, match="one of"):
        RoutingGoal()
    with pytest.raises(ValueError, match="one of"):
        RoutingGoal(0.9, 0.2)
    assert RoutingGoal(0.9).agreement_target(0.5) == 0.9
    assert RoutingGoal(max_escalation=0.2).agreement_target(0.85) == 0.85


def test_the_sprt_catches_a_fall_and_keeps_a_good_version() -> None:
    rng = random.Random(0)

    def first_verdict(rate: float) -> tuple[str, int]:
        test = AgreementSPRT(0.95, 0.1, alpha=0.01, beta=0.05)
        for n in range(1, 10_000):
            verdict = test.update(rng.random() < rate)
            if verdict != "continue":
                return verdict, n
        return "continue", 10_000

    falls = [first_verdict(0.6) for _ in range(200)]
    assert all(v == "fell" for v, _ in falls)
    assert max(n for _, n in falls) < 60  # a clear fall is caught within tens of audits
    good = [first_verdict(0.96) for _ in range(200)]
    assert sum(v == "fell" for v, _ in good) <= 6  # alpha = 0.01, some slack for 200 draws
    with pytest.raises(ValueError):
        AgreementSPRT(0.05, 0.1)
