"""Retries, an overall deadline and a circuit breaker around any ``Teacher``.

One wrapper for every adapter, so the Anthropic and OpenAI-compatible clients only map
their SDK's errors onto ``TeacherError`` (with ``retryable`` and ``retry_after``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from gateway.errors import TeacherError, TeacherTimeout, TeacherUnavailable
from gateway.teachers.base import Teacher, TeacherAnswer, TeacherRequest

__all__ = ["RETRYABLE_STATUSES", "CircuitBreaker", "ResilientTeacher", "retry_after_seconds"]

# HTTP statuses worth another try, whichever provider answered them (529: Anthropic's overload)
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def retry_after_seconds(value: str | None) -> float | None:
    """A ``retry-after`` header's delay in seconds (the number form; an HTTP date or junk
    gives None, and the backoff decides)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


class CircuitBreaker:
    """Open after ``failures`` consecutive failures; let one trial call through after
    ``cooldown_s``; close again on a success."""

    def __init__(
        self,
        *,
        failures: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def record_success(self) -> None:
        self._consecutive, self._opened_at = 0, None

    def record_failure(self) -> None:
        self._consecutive += 1
        if self._consecutive >= self.failures or self.state == "half-open":
            self._opened_at = self._clock()


class ResilientTeacher:
    """``Teacher`` with retries on retryable errors, backoff honouring ``retry-after``,
    a deadline over all attempts, and a circuit breaker. Never hangs a client."""

    def __init__(
        self,
        inner: Teacher,
        *,
        deadline_s: float = 20.0,
        max_attempts: int = 3,
        backoff_s: float = 0.25,
        max_backoff_s: float = 4.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.deadline_s = deadline_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.breaker = breaker or CircuitBreaker()
        self.retries = 0  # attempts after the first, for metrics

    async def complete(self, request: TeacherRequest) -> TeacherAnswer:
        if not self.breaker.allow():
            raise TeacherUnavailable(f"teacher {self.name} is failing; its circuit is open")
        deadline = time.monotonic() + self.deadline_s
        try:
            async with asyncio.timeout(self.deadline_s):
                answer = await self._attempts(request, deadline)
        except TimeoutError:
            self.breaker.record_failure()
            raise TeacherTimeout(
                f"teacher {self.name} did not answer within {self.deadline_s:.1f}s"
            ) from None
        except TeacherError:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return answer

    async def _attempts(self, request: TeacherRequest, deadline: float) -> TeacherAnswer:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.inner.complete(request)
            except TeacherError as exc:
                if not exc.retryable or attempt >= self.max_attempts:
                    raise
                wait = exc.retry_after
                if wait is None:
                    wait = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (
                        0.5 + random.random() / 2
                    )
                if time.monotonic() + wait >= deadline:
                    raise  # waiting would pass the deadline: fail now, not later
                self.retries += 1
                await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self.inner.aclose()
