"""``TeacherBudgets``: teacher spend per budget and period, one count for every replica.

Each budget period is a Redis hash (``distillgate:{budgets}:key:<name>:day:<date>``)
holding one field per replica, ``s:<replica>``: that replica's own cumulative spend in the
period, always written as an absolute value. Writing it again (a retry whose reply was
lost, a settlement after an outage) changes nothing, so a call is never counted twice; the
fleet's spend is the sum of the fields. A call in flight holds its estimated cost in a field
``h:<replica>:<n>`` with an expiry (a crashed replica's holds lapse), so replicas asking
at once see each other's calls: a budget is refused once spent plus held reaches it, which
keeps the overshoot within about one call. One script call (``EVALSHA``) checks, holds and
settles every budget of a request; all budget hashes share one hash tag (one slot on a
Cluster: they are touched only on escalations).

When Redis does not answer within ``timeout_s`` the replica counts alone, the rate limits'
rule: it may spend what was left at its last sight of the fleet divided by the replicas
expected; its spend keeps accumulating in ``s:<replica>`` and reaches Redis with the next
call that answers (a settlement every ``flush_s`` too), so the outage's spend is counted
once. Without Redis at all, each process counts alone with the whole budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from gateway.budgets.base import Budget, BudgetFigures, Hold, OverBudget, period_of
from gateway.redis_clients import AsyncRedis, async_redis

__all__ = ["TeacherBudgets", "budget_key"]

logger = logging.getLogger(__name__)

# ARGV: this replica's spend field, the hold's field ('' = settle only), the estimate, the
# hold's lifetime in ms, the share of each limit that admits, hold fields to release
# (space-separated), then for each key: its limit, this replica's cumulative spend, and when
# the hash expires. Returns {admitted 0/1, refused key's index, spent1, held1, spent2, ...}.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local own, hold, amount = ARGV[1], ARGV[2], tonumber(ARGV[3])
local hold_ms, share = tonumber(ARGV[4]), tonumber(ARGV[5])
local releases = {}
for f in string.gmatch(ARGV[6], '%S+') do releases[#releases + 1] = f end
local out, refused = {}, 0
for i, key in ipairs(KEYS) do
  local base = 6 + (i - 1) * 3
  local limit, mine, expire_at = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), ARGV[base + 3]
  local current = tonumber(redis.call('HGET', key, own) or '0')
  if mine > current then redis.call('HSET', key, own, ARGV[base + 2]) end
  if #releases > 0 then redis.call('HDEL', key, unpack(releases)) end
  local flat = redis.call('HGETALL', key)
  local spent, held = 0, 0
  for j = 1, #flat, 2 do
    local name, value = flat[j], flat[j + 1]
    if string.sub(name, 1, 2) == 's:' then
      spent = spent + tonumber(value)
    else
      local size, until_ms = string.match(value, '(%S+) (%S+)')
      if tonumber(until_ms) < now then redis.call('HDEL', key, name)
      else held = held + tonumber(size) end
    end
  end
  if #flat > 0 then redis.call('EXPIREAT', key, expire_at) end
  if hold ~= '' and refused == 0 and spent + held >= limit * share then refused = i end
  out[#out + 1] = string.format('%.17g', spent)
  out[#out + 1] = string.format('%.17g', held)
end
local admitted = 0
if hold ~= '' and refused == 0 then
  admitted = 1
  if amount > 0 then
    for i, key in ipairs(KEYS) do
      redis.call('HSET', key, hold, string.format('%.17g', amount) .. ' ' .. (now + hold_ms))
      redis.call('EXPIREAT', key, ARGV[6 + (i - 1) * 3 + 3])
    end
  end
end
table.insert(out, 1, tostring(refused))
table.insert(out, 1, tostring(admitted))
return out
"""

_KEEP_S = 2 * 86400  # a period's hash outlives its end by this (reports of yesterday)


def budget_key(budget: Budget, period_id: str) -> str:
    return f"distillgate:{{budgets}}:{budget.scope}:{budget.name}:{budget.period}:{period_id}"


@dataclass
class _Account:
    """One budget period as this replica sees it."""

    budget: Budget
    key: str
    ends_at: float
    own: float = 0.0  # this replica's spend in the period, settled calls
    synced: float = 0.0  # ``own`` as last written to Redis
    holding: float = 0.0  # this replica's calls in flight, at their estimates
    fleet_spent: float = 0.0  # the fleet's spend at the last answer from Redis
    fleet_held: float = 0.0
    releases: set[str] = field(default_factory=set)

    @property
    def dirty(self) -> bool:
        return self.own > self.synced or bool(self.releases)


class TeacherBudgets:
    """``redis`` None: each process counts alone (``shared`` None), with whole budgets."""

    def __init__(
        self,
        redis: AsyncRedis | None = None,
        *,
        replicas: int = 1,
        timeout_s: float = 0.25,
        retry_s: float = 1.0,
        flush_s: float = 0.5,
        hold_s: float = 120.0,
        clock: Callable[[], float] = time.time,
        on_fallback: Callable[[], None] | None = None,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_SCRIPT) if redis is not None else None
        self.replicas = replicas if redis is not None else 1
        self.timeout_s, self.retry_s, self.flush_s, self.hold_s = (
            timeout_s,
            retry_s,
            flush_s,
            hold_s,
        )
        self.clock = clock
        self.on_fallback = on_fallback
        self.shared: bool | None = True if redis is not None else None
        self.replica = uuid.uuid4().hex[:12]
        self._down_until = 0.0
        self._accounts: dict[str, _Account] = {}
        self._holds = itertools.count(1)
        self._dirty = asyncio.Event()

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> TeacherBudgets:
        client = async_redis(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, **kwargs)  # type: ignore[arg-type]

    # -- the request path ------------------------------------------------------------------
    async def admit(
        self, budgets: Iterable[Budget], estimate_usd: float, share: float = 1.0
    ) -> Hold:
        """Hold ``estimate_usd`` against every budget, or raise ``OverBudget`` naming the
        first one spent. ``share`` < 1 stops this kind of call earlier (audits, shadows)."""
        now = self.clock()
        accounts = [self._account(b, now) for b in budgets]
        hold_field = f"h:{self.replica}:{next(self._holds)}"
        if not accounts:
            return Hold([], 0.0, hold_field, in_redis=False)
        if self._redis_turn(now):
            reply = await self._call(accounts, hold_field, estimate_usd, share)
            if reply is not None:
                admitted, refused = reply
                if not admitted:
                    raise OverBudget(self._figures(accounts[refused - 1]))
                for account in accounts:
                    account.holding += estimate_usd
                return Hold([a.key for a in accounts], estimate_usd, hold_field, in_redis=True)
            for account in accounts:  # the reply was lost: a hold may stand; release it
                account.releases.add(hold_field)
        if self.on_fallback is not None and self.shared is not None:
            self.on_fallback()
        for account in accounts:
            if not self._alone_admits(account, share):
                raise OverBudget(self._figures(account))
        for account in accounts:
            account.holding += estimate_usd
        return Hold([a.key for a in accounts], estimate_usd, hold_field, in_redis=False)

    def settle(self, hold: Hold, cost_usd: float) -> None:
        """The call is over: count its real cost (0 if it failed), release its hold."""
        if hold.settled:
            return
        hold.settled = True
        for key in hold.accounts:
            account = self._accounts.get(key)
            if account is None:
                continue
            account.own += cost_usd
            account.holding = max(0.0, account.holding - hold.amount)
            if hold.in_redis and hold.amount > 0:
                account.releases.add(hold.field)
        if hold.accounts:
            self._dirty.set()

    # -- figures -------------------------------------------------------------------------
    async def figures(self, budgets: Iterable[Budget]) -> list[BudgetFigures]:
        """Each budget's spend now: asked of Redis (settling this replica's spend first),
        else as last seen plus this replica's own since."""
        now = self.clock()
        accounts = [self._account(b, now) for b in budgets]
        if accounts and self._redis_turn(now):
            await self._call(accounts, "", 0.0, 1.0)
        return [self._figures(a) for a in accounts]

    def snapshot(self, budgets: Iterable[Budget]) -> list[BudgetFigures]:
        """As ``figures`` without asking Redis (metrics at scrape time)."""
        now = self.clock()
        return [self._figures(self._account(b, now)) for b in budgets]

    # -- background ------------------------------------------------------------------------
    async def flush(self) -> None:
        """Write this replica's settled spend and released holds to Redis."""
        now = self.clock()
        dirty = [a for a in self._accounts.values() if a.dirty]
        if dirty and self._redis_turn(now):
            await self._call(dirty, "", 0.0, 1.0)
        for key, account in list(self._accounts.items()):  # periods over and settled
            if account.ends_at < now and not account.dirty and account.holding == 0:
                del self._accounts[key]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.flush_s)
            self._dirty.clear()
            await self.flush()

    async def aclose(self) -> None:
        if self._redis is not None:
            self._down_until = 0.0
            await self.flush()
            await self._redis.aclose()

    # -- inside ----------------------------------------------------------------------------
    def _account(self, budget: Budget, now: float) -> _Account:
        period_id, ends_at = period_of(budget.period, now)
        key = budget_key(budget, period_id)
        account = self._accounts.get(key)
        if account is None:
            account = self._accounts[key] = _Account(budget, key, ends_at)
        elif account.budget != budget:  # the key file or task changed the limit
            account.budget = budget
        return account

    def _redis_turn(self, now: float) -> bool:
        return self._redis is not None and now >= self._down_until

    def _alone_admits(self, account: _Account, share: float) -> bool:
        """Alone, this replica may spend its part of what the fleet had left."""
        left = max(0.0, account.budget.limit_usd * share - account.fleet_spent - account.fleet_held)
        mine = account.own - account.synced + account.holding
        return mine < left / self.replicas

    def _figures(self, account: _Account) -> BudgetFigures:
        unsynced = account.own - account.synced
        return BudgetFigures(
            account.budget,
            spent_usd=account.fleet_spent + unsynced,
            held_usd=account.fleet_held if self.shared else account.holding,
            resets_at=account.ends_at,
            shared=self.shared,
        )

    async def _call(
        self, accounts: list[_Account], hold_field: str, amount: float, share: float
    ) -> tuple[bool, int] | None:
        """One script call; None when Redis did not answer (this replica now counts alone)."""
        assert self._script is not None
        releases = set().union(*(a.releases for a in accounts))
        args: list[str | int | float] = [
            f"s:{self.replica}",
            hold_field,
            repr(amount),
            int(self.hold_s * 1000),
            repr(share),
            " ".join(sorted(releases)),
        ]
        sent = []
        for account in accounts:
            sent.append(account.own)
            args += [
                repr(account.budget.limit_usd),
                repr(account.own),
                int(account.ends_at + _KEEP_S),
            ]
        try:
            reply = await asyncio.wait_for(
                self._script(keys=[a.key for a in accounts], args=args), self.timeout_s
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._went_down(exc)
            return None
        if self.shared is False:
            logger.warning("teacher budgets: Redis answers again; spend is counted fleet-wide")
        self.shared = True
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in reply]
        for i, (account, own) in enumerate(zip(accounts, sent, strict=True)):
            account.synced = max(account.synced, own)
            account.releases -= releases
            account.fleet_spent = float(values[2 + 2 * i])
            account.fleet_held = float(values[3 + 2 * i])
        return values[0] == "1", int(values[1])

    def _went_down(self, exc: BaseException) -> None:
        if self.shared:
            logger.warning(
                "teacher budgets: Redis unreachable (%s: %s); this replica counts alone, "
                "within 1/%d of what each budget had left, retrying every %.1f s",
                type(exc).__name__,
                exc,
                self.replicas,
                self.retry_s,
            )
        self.shared = False
        self._down_until = self.clock() + self.retry_s
