"""``UsageLedger``: the pipeline's answers and teacher calls, counted per UTC day, task and
client key in Redis, for cost reports.

It watches the same events as the metrics (it is a ``PipelineObserver``), so its totals are
the metrics' own: requests by route, teacher calls, tokens and dollars by purpose, dollars
saved. A day is one hash, ``distillgate:{usage}:<date>``; a field is
``<task>\\t<key>\\t<measure>\\t<replica>`` holding that replica's cumulative value for the day,
written as an absolute value every ``flush_s``: a flush retried after a lost reply, or sent
after Redis was down a while, counts nothing twice, and nothing counted while Redis was
down is lost (only what a crash takes before its next flush). Days are kept
``retention_days``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from redis.exceptions import RedisError

from gateway.pipeline.base import NullObserver
from gateway.redis_clients import AsyncRedis

__all__ = ["Usage", "UsageLedger", "read_usage", "usage_key"]

logger = logging.getLogger(__name__)

# (task, key, measure) -> value, for one day
Usage = dict[tuple[str, str, str], float]


def usage_key(day: str) -> str:
    return f"distillgate:{{usage}}:{day}"


def _day(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()


class UsageLedger(NullObserver):
    def __init__(
        self,
        redis: AsyncRedis,
        *,
        flush_s: float = 1.0,
        timeout_s: float = 1.0,
        retention_days: int = 90,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self.flush_s, self.timeout_s = flush_s, timeout_s
        self.retention_s = retention_days * 86400
        self.clock = clock
        self.replica = uuid.uuid4().hex[:12]
        self._totals: dict[str, Usage] = defaultdict(lambda: defaultdict(float))
        self._written: dict[str, Usage] = defaultdict(dict)

    # -- events ----------------------------------------------------------------------------
    def served(self, task: str, key: str, route: str, saved_usd: float) -> None:
        day = self._totals[_day(self.clock())]
        day[task, key, f"requests:{route}"] += 1
        if saved_usd:
            day[task, key, "saved_usd"] += saved_usd

    def teacher_answered(
        self,
        task: str,
        purpose: str,
        *,
        key: str,
        seconds: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        day = self._totals[_day(self.clock())]
        day[task, key, f"teacher_calls:{purpose}"] += 1
        day[task, key, f"teacher_input_tokens:{purpose}"] += input_tokens
        day[task, key, f"teacher_output_tokens:{purpose}"] += output_tokens
        day[task, key, f"teacher_usd:{purpose}"] += cost_usd

    # -- writing -----------------------------------------------------------------------------
    async def flush(self) -> None:
        """Write every value that changed since the last write that Redis confirmed."""
        today = _day(self.clock())
        for day, totals in list(self._totals.items()):
            written = self._written[day]
            changed = {k: v for k, v in totals.items() if written.get(k) != v}
            if changed:
                mapping: dict[Any, Any] = {
                    f"{task}\t{key}\t{measure}\t{self.replica}": repr(value)
                    for (task, key, measure), value in changed.items()
                }
                try:
                    async with asyncio.timeout(self.timeout_s):
                        pipe = self._redis.pipeline(transaction=False)
                        pipe.hset(usage_key(day), mapping=mapping)
                        pipe.expireat(usage_key(day), _end_of(day) + self.retention_s)
                        await pipe.execute()
                except (RedisError, OSError, TimeoutError) as exc:
                    logger.info("usage ledger: not written yet (%s); kept for the next flush", exc)
                    return
                written.update(changed)
            if day < today and not changed:  # a past day, all written
                del self._totals[day]
                self._written.pop(day, None)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_s)
            await self.flush()

    async def aclose(self) -> None:
        await self.flush()
        await self._redis.aclose()


def _end_of(day: str) -> int:
    date = dt.date.fromisoformat(day) + dt.timedelta(days=1)
    return int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC).timestamp())


async def read_usage(redis: AsyncRedis, days: Iterable[str]) -> dict[str, Usage]:
    """Each day's ledger, the replicas' values summed: ``{day: {(task, key, measure): v}}``."""
    out: dict[str, Usage] = {}
    for day in days:
        raw: Mapping[bytes | str, bytes | str] = await redis.hgetall(usage_key(day))
        usage: Usage = defaultdict(float)
        for field, value in raw.items():
            name = field.decode() if isinstance(field, bytes) else field
            task, key, measure, _replica = name.split("\t")
            usage[task, key, measure] += float(value)
        out[day] = dict(usage)
    return out
