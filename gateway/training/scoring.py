"""Score answers under a student with teacher forcing: full-vocabulary logits per token.

The raw material of calibration: the logits at each answer token (and the end token)
given the prompt ids exactly as serving encodes them (callers take them from the
engine's ``encode``), so a temperature can be applied afterwards with the full softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from transformers import PreTrainedModel

__all__ = ["ScoredAnswer", "score_answers", "top_k_scored"]


@dataclass(frozen=True)
class ScoredAnswer:
    logits: NDArray[np.float32]  # [answer tokens, vocab]
    targets: NDArray[np.int64]  # [answer tokens]


@torch.no_grad()
def score_answers(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int = 64,
) -> list[ScoredAnswer]:
    """Logits of each answer's tokens given its prompt; answers are token ids."""
    if len(prompts) != len(answers):
        raise ValueError("prompts and answers differ in length")
    model.eval()
    out: list[ScoredAnswer | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(answers[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(prompts[i]) + len(answers[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = [*prompts[i], *answers[i]]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        for row, i in enumerate(idx):
            p, a = len(prompts[i]), len(answers[i])
            out[i] = ScoredAnswer(
                logits[row, p - 1 : p + a - 1].numpy().astype(np.float32),
                np.asarray(answers[i], dtype=np.int64),
            )
    return [s for s in out if s is not None]


def top_k_scored(rows: Sequence[tuple[float, Sequence[float]]]) -> ScoredAnswer:
    """An answer scored among each position's top-k logprobs (an engine that reports no
    more, vLLM), as the rows of a ``ScoredAnswer``: log softmax(row / T) at the target is
    then ``calibration.renormalized_logprob``, what serving computes; the chosen token is
    appended where it is not among the k, and shorter rows are padded with -inf."""
    width = max((len(top) + 1 for _, top in rows), default=1)
    logits = np.full((len(rows), width), -np.inf, dtype=np.float32)
    targets = np.zeros(len(rows), dtype=np.int64)
    for i, (chosen, top) in enumerate(rows):
        row = list(top)
        if chosen in row:
            targets[i] = row.index(chosen)
        else:
            targets[i] = len(row)
            row.append(chosen)
        logits[i, : len(row)] = row
    return ScoredAnswer(logits, targets)
