"""What calibrating and evaluating a free-text task add: the judge's verdicts on the
student's answers (each distinct answer judged once, ``judges/verdicts.py``), BLEU and
chrF against the human references (sacrebleu), and the slot error rate where the rubric's
program counts slot errors (E2E)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import sacrebleu

from gateway.jobs.calibrate import ScoredSet
from gateway.judges.verdicts import Verdicts

__all__ = ["judged", "slot_error_rate", "text_scores"]


async def judged(scored: ScoredSet, verdicts: Verdicts) -> ScoredSet:
    """``scored`` with the judge's verdicts on the student's own answers, each asked of
    the input as the student read it (the last user turn)."""
    pairs = [
        (e.chat()[-1]["content"], a.text)
        for e, a in zip(scored.examples, scored.answers, strict=True)
    ]
    accepted = await verdicts.acceptable(pairs)
    return dataclasses.replace(scored, verdicts=np.array(accepted, dtype=np.float64))


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
