"""A verdict, what a judge is asked, and the seam every judge fills."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Judge", "JudgeRequest", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """Acceptable or not, and why (what a judge model or a program says)."""

    acceptable: bool
    reason: str
    cost_usd: float = 0.0  # what asking cost (a judge model's tokens at the task's prices)


@dataclass(frozen=True)
class JudgeRequest:
    """``prompt``: the input as the student read it; ``answer``: the text judged."""

    rubric: str
    prompt: str
    answer: str


class Judge(Protocol):
    """Judges one answer. A judge that cannot decide (fails, times out) raises; it never
    answers "acceptable" for an answer it did not judge."""

    name: str

    async def judge(self, request: JudgeRequest) -> Verdict: ...

    async def aclose(self) -> None: ...
