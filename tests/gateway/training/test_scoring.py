"""Answers scored among the top k (vLLM's prompt logprobs) give calibration the confidence
serving computes from the same k: fitting T on them fits the served confidence."""

from __future__ import annotations

import random

import numpy as np
import pytest

from calibration import renormalized_logprob
from calibration.temperature import log_softmax
from gateway.training.scoring import top_k_scored


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
def test_top_k_rows_give_the_served_renormalised_logprob(temperature: float) -> None:
    rng = random.Random(0)
    rows = []
    for i in range(50):
        top = sorted((-rng.expovariate(0.5) for _ in range(rng.randint(1, 20))), reverse=True)
        # Mostly the chosen token is among the k; sometimes (a teacher's answer) it is not.
        chosen = top[rng.randrange(len(top))] if i % 4 else min(top) - rng.expovariate(1.0)
        rows.append((chosen, top))
    scored = top_k_scored(rows)
    at_t = log_softmax(scored.logits, temperature)[np.arange(len(rows)), scored.targets]
    served = [renormalized_logprob(c, top, temperature) for c, top in rows]
    assert at_t == pytest.approx(served, abs=1e-5)
    assert top_k_scored([]).logits.shape[0] == 0
