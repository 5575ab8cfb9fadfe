"""The seam every rate limiter fills, and the 429 it answers with."""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.errors import RateLimited
from gateway.keys import ClientKey

__all__ = ["RateLimiter", "refusal"]


class RateLimiter(Protocol):
    """Where a client key's allowance is kept: this process, or Redis for the whole fleet."""

    shared: bool | None
    """True while the fleet shares the limits, False while this replica limits alone
    because the shared store does not answer, None for limits per process by design."""

    async def admit(self, key: ClientKey) -> None:
        """Take one request from ``key``'s allowance, or raise ``RateLimited`` (429)."""

    def charge(self, key: ClientKey, tokens: int) -> None:
        """Count an answer's tokens against ``key`` (never refuses: the answer is given)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Background work (settling charges) until ``stop`` is set."""

    async def aclose(self) -> None:
        """Settle what is owed and release connections."""


def refusal(key: ClientKey, kind: str, wait: float, share: int = 1) -> RateLimited:
    per_minute = key.tokens_per_minute if kind == "tokens" else key.requests_per_minute
    where = (
        f" (this replica's 1/{share} while the shared limits are unreachable)" if share > 1 else ""
    )
    return RateLimited(
        f"Rate limit reached for key {key.name!r}: {per_minute} {kind} per minute{where}.",
        kind=kind,
        retry_after=wait,
    )
