"""What an evaluation of a free-text task adds: the judge's verdicts on every answer (each
distinct answer judged once), BLEU and chrF against the human references (sacrebleu), and
the slot error rate where the rubric's program counts slot errors (E2E)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

import sacrebleu

from gateway.judges import Judge, JudgeRequest

__all__ = ["Verdicts", "slot_error_rate", "text_scores"]


class Verdicts:
    """A judge's verdicts, asked at most once per (input, answer); a judge that fails gives
    no verdict, and an answer without one is not acceptable (counted in ``failures``)."""

    def __init__(self, judge: Judge, rubric: str, *, concurrency: int = 16) -> None:
        self.judge, self.rubric = judge, rubric
        self._known: dict[tuple[str, str], bool] = {}
        self._gate = asyncio.Semaphore(concurrency)
        self.failures = 0
        self.asked = 0

    async def acceptable(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        todo = list(dict.fromkeys(p for p in pairs if p not in self._known))

        async def one(pair: tuple[str, str]) -> None:
            async with self._gate:
                self.asked += 1
                try:
                    verdict = await self.judge.judge(JudgeRequest(self.rubric, *pair))
                except Exception:  # any failure: not judged, so never acceptable
                    self.failures += 1
                    self._known[pair] = False
                    return
                self._known[pair] = verdict.acceptable

        await asyncio.gather(*(one(p) for p in todo))
        return [self._known[p] for p in pairs]


def text_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu's defaults) against every reference of each input."""
    width = max(len(r) for r in references)
    # One stream per reference slot; None where an input has fewer (sacrebleu skips it;
    # its annotations say str only).
    streams = cast(
        list[list[str]],
        [[r[i] if i < len(r) else None for r in references] for i in range(width)],
    )
    return {
        "bleu": float(sacrebleu.corpus_bleu(list(hypotheses), streams).score),
        "chrf": float(sacrebleu.corpus_chrf(list(hypotheses), streams).score),
    }


def slot_error_rate(
    slot_errors: Callable[[Any, str], tuple[list[str], list[str]]],
    parse: Callable[[str], Any],
    prompts: Sequence[str],
    answers: Sequence[str],
) -> float:
    """(missed + added) / the inputs' attributes, over the set (E2E's measure)."""
    errors = slots = 0
    for prompt, answer in zip(prompts, answers, strict=True):
        mr = parse(prompt)
        missing, added = slot_errors(mr, answer)
        errors += len(missing) + len(added)
        slots += len(mr)
    return errors / max(slots, 1)
