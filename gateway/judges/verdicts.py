"""``Verdicts``: a judge asked at most once per (input, answer), within a budget of calls.

Offline work (calibrate, evaluate, a loop round) judges thousands of answers, many of them
the same text (a label-like answer, the serving student's answers to the frozen set each
round): each distinct pair is asked once, and a ``store`` keeps verdicts across runs (the
loop keeps one per task in its registry). A judge that fails gives no verdict: the answer
is not acceptable for this run (counted in ``failures``) and nothing is stored, so a later
run asks again. ``max_calls`` caps the calls one run may make: past it, ``JudgeBudgetSpent``
(a round stops rather than count unjudged answers as wrong).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import MutableMapping, Sequence
from pathlib import Path

from gateway.judges.base import Judge, JudgeRequest

__all__ = ["JudgeBudgetSpent", "VerdictFile", "Verdicts"]


class JudgeBudgetSpent(Exception):
    """Judging what is asked would take more calls than this run may make."""


class Verdicts:
    def __init__(
        self,
        judge: Judge,
        rubric: str,
        *,
        concurrency: int = 16,
        max_calls: int | None = None,
        store: MutableMapping[str, bool] | None = None,
    ) -> None:
        self.judge, self.rubric = judge, rubric
        self.max_calls = max_calls
        self._store: MutableMapping[str, bool] = store if store is not None else {}
        self._failed: set[str] = set()
        self._gate = asyncio.Semaphore(concurrency)
        self.failures = 0
        self.asked = 0
        self.cost_usd = 0.0

    def _key(self, prompt: str, answer: str) -> str:
        """What a verdict depends on: the judge, the rubric, the input and the answer."""
        text = json.dumps([self.judge.name, self.rubric, prompt, answer], ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    async def acceptable(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Each (input, answer)'s verdict, in order; raises ``JudgeBudgetSpent`` before
        asking anything if the new pairs need more calls than are left."""
        keys = [self._key(*p) for p in pairs]
        todo = {
            k: p
            for k, p in zip(keys, pairs, strict=True)
            if k not in self._store and k not in self._failed
        }
        if self.max_calls is not None and self.asked + len(todo) > self.max_calls:
            raise JudgeBudgetSpent(
                f"judging {len(todo)} more answers would pass the budget of "
                f"{self.max_calls} judge calls ({self.asked} made)"
            )

        async def one(key: str, pair: tuple[str, str]) -> None:
            async with self._gate:
                self.asked += 1
                try:
                    verdict = await self.judge.judge(JudgeRequest(self.rubric, *pair))
                except Exception:  # any failure: not judged, so never acceptable
                    self.failures += 1
                    self._failed.add(key)
                    return
                self.cost_usd += verdict.cost_usd
                self._store[key] = verdict.acceptable

        await asyncio.gather(*(one(k, p) for k, p in todo.items()))
        return [self._store.get(k, False) for k in keys]

    def summary(self) -> dict[str, float | int]:
        return {"asked": self.asked, "failures": self.failures, "cost_usd": self.cost_usd}


class VerdictFile(MutableMapping[str, bool]):
    """Verdicts kept in a JSON-lines file, appended as they come (a crash loses at most
    the line being written; a torn last line is skipped on reading)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: dict[str, bool] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    key, value = json.loads(line)
                except ValueError:
                    continue
                self._known[str(key)] = bool(value)

    def __getitem__(self, key: str) -> bool:
        return self._known[key]

    def __setitem__(self, key: str, value: bool) -> None:
        self._known[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps([key, value]) + "\n")

    def __delitem__(self, key: str) -> None:
        raise TypeError("verdicts are never taken back")

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)
