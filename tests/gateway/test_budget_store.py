"""Teacher budgets on a real Redis, three ``TeacherBudgets`` as three replicas: calls asked at
once overshoot a budget by about one call at most; with Redis killed each counts alone within
its share of what was left, and once Redis is back every dollar is counted exactly once; and
on a Redis Cluster the budgets and the usage ledger run unchanged (their keys share one slot
each)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import time
from pathlib import Path

from gateway.budgets import Budget, OverBudget, TeacherBudgets, budget_key
from gateway.budgets.base import period_of
from gateway.redis_clients import async_redis
from gateway.usage import UsageLedger, read_usage
from gateway.usage.ledger import Usage
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import RedisServer

BUDGET = Budget("key", "tight", "day", 0.01)
CALL = 0.0004  # about Banking77's cost of a teacher call at $1 / $5 per million tokens


def replicas(redis: RedisServer, n: int = 3) -> list[TeacherBudgets]:
    return [
        TeacherBudgets.from_url(redis.url, replicas=n, timeout_s=0.2, retry_s=0.3) for _ in range(n)
    ]


async def call(budgets: TeacherBudgets, rng: random.Random) -> bool:
    """One teacher call of a slightly varying cost, if a budget admits it."""
    try:
        hold = await budgets.admit([BUDGET], CALL)
    except OverBudget:
        return False
    await asyncio.sleep(rng.uniform(0.001, 0.01))  # the call's time: others ask meanwhile
    budgets.settle(hold, CALL * rng.uniform(0.9, 1.0))
    return True


def fleet_spent(redis: RedisServer) -> float:
    period, _ = period_of("day", time.time())
    fields = redis.client().hgetall(budget_key(BUDGET, period))
    return sum(float(v) for f, v in fields.items() if f.startswith("s:"))


def test_replicas_asking_at_once_overshoot_by_at_most_one_call(redis_server: RedisServer) -> None:
    async def run() -> list[bool]:
        fleet = replicas(redis_server)
        rng = random.Random(1)
        try:
            # 3 replicas x 40 calls, 8 at a time each: ~120 x $0.0004 asked, $0.01 allowed
            async def replica(b: TeacherBudgets) -> list[bool]:
                results: list[bool] = []
                for _ in range(5):
                    results += await asyncio.gather(*(call(b, rng) for _ in range(8)))
                return results

            out = await asyncio.gather(*(replica(b) for b in fleet))
        finally:
            for b in fleet:
                await b.aclose()
        return [ok for results in out for ok in results]

    made = asyncio.run(run())
    spent = fleet_spent(redis_server)
    assert 0.01 - CALL <= spent <= 0.01 + CALL, spent  # within one call of the budget
    assert 25 <= sum(made) <= 28 and not all(made)  # calls cost $0.00036-0.0004


def test_redis_killed_mid_run_is_counted_alone_then_reconciled_once(
    redis_server: RedisServer,
) -> None:
    async def run() -> tuple[float, float, list[bool]]:
        fleet = replicas(redis_server)
        rng = random.Random(2)
        try:
            for b in fleet:  # $0.004 spent while Redis answers
                for _ in range(3):
                    assert await call(b, rng)
            await asyncio.gather(*(b.flush() for b in fleet))
            before = fleet_spent(redis_server)
            redis_server.kill()
            alone = [await call(b, rng) for b in fleet for _ in range(10)]
            assert all(b.shared is False for b in fleet)
            own = sum(a.own for b in fleet for a in b._accounts.values())
            redis_server.start()
            await asyncio.sleep(0.4)  # past retry_s: the next call asks Redis again
            for _ in range(2):  # twice: the second write of the same totals adds nothing
                await asyncio.gather(*(b.flush() for b in fleet))
            assert all(b.shared for b in fleet)
            return before, own, alone
        finally:
            for b in fleet:
                await b.aclose()

    before, own, alone = asyncio.run(run())
    # Alone, each replica spent at most its third of what was left ($0.01 - before), and
    # about that: ~(0.01 - 0.0035) / 3 / 0.0004 ≈ 5 calls each.
    made, share = sum(alone), (0.01 - before) / 3
    assert 3 * math.floor(share / CALL) <= made <= 3 * (math.ceil(share / (0.9 * CALL)) + 1), made
    after = fleet_spent(redis_server)
    assert abs(after - own) < 1e-12  # every replica's spend, the outage's included, once
    assert after <= 0.01 + 3 * CALL


def test_budgets_and_the_usage_ledger_run_unchanged_on_a_redis_cluster(tmp_path: Path) -> None:
    cluster = RedisClusterServers(tmp_path / "cluster")
    cluster.start()
    try:

        async def run() -> tuple[float, dict[str, Usage]]:
            fleet = [TeacherBudgets.from_url(cluster.url, replicas=2) for _ in range(2)]
            ledger = UsageLedger(async_redis(cluster.url))
            rng = random.Random(3)
            try:
                for b in fleet:
                    for _ in range(4):
                        assert await call(b, rng)
                ledger.served("banking77", "acme", "student", 0.001)
                await asyncio.gather(*(b.flush() for b in fleet), ledger.flush())
                (figures,) = await fleet[0].figures([BUDGET])
                today = dt.datetime.now(dt.UTC).date().isoformat()
                return figures.spent_usd, await read_usage(ledger._redis, [today])
            finally:
                for b in fleet:
                    await b.aclose()
                await ledger.aclose()

        spent, usage = asyncio.run(run())
        assert 8 * 0.9 * CALL <= spent <= 8 * CALL  # both replicas' spend, summed once
        (day,) = usage.values()
        assert day == {
            ("banking77", "acme", "requests:student"): 1.0,
            ("banking77", "acme", "saved_usd"): 0.001,
        }
    finally:
        cluster.stop()
