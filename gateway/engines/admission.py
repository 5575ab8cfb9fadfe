"""A bound on what an engine is asked to hold: requests inside it, and requests waiting.

vLLM and a remote fleet queue without limit of their own (vLLM past ``max_num_seqs``, a
connection pool past its size), so one burst could make every client wait behind it.
Wrapped, an engine takes ``max_running`` requests at once, lets ``max_waiting`` more wait
for a place, and refuses the next with 429 and ``Retry-After``, the same contract as the
embedded engine's own queue. A cancelled request (a client gone) gives its place back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

from gateway.engines.base import GenerationRequest, StudentEngine, TokenDelta, WrappedEngine
from gateway.errors import Overloaded

__all__ = ["GatedEngine"]


class GatedEngine(WrappedEngine):
    def __init__(self, engine: StudentEngine, *, max_running: int, max_waiting: int) -> None:
        super().__init__(engine)
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0
        self.waiting = 0
        self._places = asyncio.Semaphore(max_running)

    @property
    def pending(self) -> int:
        """Requests accepted and not yet finished, running or waiting."""
        return self.running + self.waiting

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        if self.running >= self.max_running and self.waiting >= self.max_waiting:
            raise Overloaded(
                f"The student is at capacity ({self.max_running} running, {self.waiting} "
                "waiting); retry shortly."
            )
        self.waiting += 1
        try:
            await self._places.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            async with aclosing(self.engine.generate(request)) as stream:
                async for delta in stream:
                    yield delta
        finally:
            self.running -= 1
            self._places.release()
