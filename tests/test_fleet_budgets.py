"""Three real gateway processes and one real Redis: a client key's daily teacher budget
holds across the fleet within about one call, the student answers past it (saying so), and
a Redis killed mid-run fails no request while the spend is counted alone and reconciled
once Redis is back, nothing counted twice."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from gateway.budgets import Budget, budget_key
from gateway.budgets.base import period_of
from gateway.simulator import simulated_tokens
from tests.conftest import LABELS
from tests.fleet import Fleet, drive, wait_until
from tests.redis_server import RedisServer

BUDGET_USD = 0.01
# Input free, output at $100 per million: a label of 4 to 6 simulator tokens costs $0.0004
# to $0.0006, so the budget pays ~20 calls.
PRICES = "\n[prices]\nteacher_input = 0.0\nteacher_output = 100.0\n"
# A budget is refused once spent plus held reaches it, so the last call admitted may land
# whole past it: the overshoot is bounded by the dearest call, not the mean one.
LARGEST_CALL_USD = max(simulated_tokens(label) for label in LABELS) * 100.0 / 1e6
SPENT = "student-fallback (key:{key}:day)"


def redis_spent(server: RedisServer, key: str) -> float:
    period, _ = period_of("day", time.time())
    try:
        fields = server.client().hgetall(budget_key(Budget("key", key, "day", 1.0), period))
    except redis.ConnectionError:
        return -1.0
    return sum(float(v) for name, v in fields.items() if name.startswith("s:"))


def teacher_usd(fleet: Fleet) -> float:
    return fleet.sum("distillgate_teacher_cost_usd_total")


def test_three_gateways_hold_a_key_to_its_teacher_budget_through_a_redis_outage(
    tiny_student, tmp_path: Path, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    budget = f"teacher_usd_per_day = {BUDGET_USD}\n"
    fleet = Fleet(
        tmp_path,
        redis_server,
        {"dg-shared": None, "dg-outage": None, "dg-free": None},
        key_lines={"dg-shared": budget, "dg-outage": budget},
        teacher_lines=PRICES,
        strict_lines=f'on_budget = "error"\nusd_per_day = {BUDGET_USD}\n{PRICES}',
        env={"DISTILLGATE_CAPTURE_TIMEOUT_S": "0.3"},
    ).start(tiny_student.path)
    try:
        # 1. Redis answers: 8 clients at once, round-robin over the three gateways.
        shared = drive(fleet.urls, "dg-shared", 80)
        assert set(shared.statuses) == {"200"}, shared.statuses  # never an error
        calls = shared.routes["teacher"]
        spent = teacher_usd(fleet)
        assert BUDGET_USD - LARGEST_CALL_USD <= spent <= BUDGET_USD + LARGEST_CALL_USD, (
            spent,
            calls,
        )
        assert shared.routes[SPENT.format(key="dg-shared")] == 80 - calls  # said so
        assert (
            fleet.sum("distillgate_teacher_budget_refusals_total", name="dg-shared") == 80 - calls
        )
        assert abs(redis_spent(redis_server, "dg-shared") - spent) < 1e-9  # counted once
        assert fleet.sum("distillgate_teacher_budget_fallback_total") == 0

        # 2. A task's own budget with on_budget = "error": OpenAI's quota 429 naming it.
        before = teacher_usd(fleet)
        strict = drive(fleet.urls, "dg-free", 80, model="strict")
        assert set(strict.statuses) == {"200", "429 insufficient_quota"}, strict.statuses
        strict_usd = teacher_usd(fleet) - before
        assert BUDGET_USD - LARGEST_CALL_USD <= strict_usd <= BUDGET_USD + LARGEST_CALL_USD, (
            strict_usd,
            strict.routes,
        )
        assert strict.routes["teacher"] == strict.statuses["200"]  # never a student instead
        assert all("task 'strict'" in message for message in strict.errors), strict.errors

        # 3. Redis killed after 10 answers, back once the run is over.
        before = teacher_usd(fleet)
        killed = drive(fleet.urls, "dg-outage", 80, during=redis_server.kill, at=10)
        assert set(killed.statuses) == {"200"}, killed.statuses  # no 5xx, no refusal
        outage_usd = teacher_usd(fleet) - before
        # Alone, each replica spends a third of what it last saw left, plus one call; what
        # the others admitted after its last sight it cannot see (about a call each).
        assert outage_usd <= BUDGET_USD + 2 * 3 * LARGEST_CALL_USD, outage_usd
        assert fleet.sum("distillgate_teacher_budget_fallback_total") > 0
        assert killed.routes[SPENT.format(key="dg-outage")] > 0
        redis_server.start()
        # Reconciled: each replica's spend reaches Redis within a retry and a flush.
        assert wait_until(
            lambda: abs(redis_spent(redis_server, "dg-outage") - outage_usd) < 1e-9, 15.0
        ), (redis_spent(redis_server, "dg-outage"), outage_usd)
        assert abs(redis_spent(redis_server, "dg-shared") - spent) < 1e-9  # untouched
        # ...and once reconciled, the fleet keeps the spent key from the teacher (a prompt
        # it asked before may still come from the cache: free).
        after = drive(fleet.urls, "dg-outage", 6)
        assert set(after.routes) <= {SPENT.format(key="dg-outage"), "cache"}, after.routes
        assert after.routes[SPENT.format(key="dg-outage")] >= 1, after.routes
    finally:
        fleet.stop()
