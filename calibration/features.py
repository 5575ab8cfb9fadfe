"""Confidence features from token log-probabilities.

For a bounded answer (a label, a short field) the probability of the whole answer,
``exp(sum of token logprobs)`` including the end token, is the strong signal. For long
free text that sum falls with length whatever the quality (length bias), so the mean and
the minimum token logprob are the features there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "TEXT_FEATURES",
    "Feature",
    "confidence",
    "renormalized_logprob",
    "text_features",
    "token_features",
]

Feature = Literal["sequence", "mean_token", "min_token"]


def token_features(token_logprobs: Sequence[float]) -> dict[str, float]:
    # Pure Python: a handful of floats per request, where numpy's call overhead dominates.
    if not token_logprobs:
        raise ValueError("an answer has at least one token (its end token)")
    total = math.fsum(token_logprobs)
    return {
        "sequence_logprob": total,
        "mean_logprob": total / len(token_logprobs),
        "min_logprob": float(min(token_logprobs)),
    }


TEXT_FEATURES = ("mean_logprob", "min_logprob", "log_length")


def text_features(token_logprobs: Sequence[float]) -> list[float]:
    """A free-text answer's features for ``LogisticCalibrator``, in ``TEXT_FEATURES``'s
    order: the mean and the least sure token's log-probability, and log(1 + tokens)."""
    f = token_features(token_logprobs)
    return [f["mean_logprob"], f["min_logprob"], math.log1p(len(token_logprobs))]


def confidence(token_logprobs: Sequence[float], feature: Feature = "sequence") -> float:
    """A probability in [0, 1] from the (temperature-scaled) token logprobs of one answer."""
    f = token_features(token_logprobs)
    key = {"sequence": "sequence_logprob", "mean_token": "mean_logprob", "min_token": "min_logprob"}
    return float(min(1.0, math.exp(f[key[feature]])))


def renormalized_logprob(chosen: float, top: Sequence[float], temperature: float) -> float:
    """log softmax(z / T)[chosen] approximated over the top-k alternatives only.

    For engines that report only the top-k logprobs (vLLM, k <= 20). Logprobs are logits
    shifted by a constant, so dividing them by T and renormalising over the k candidates
    (plus the chosen token if it is not among them) equals softmax(z / T) restricted to
    those candidates. It overstates the probability by the mass outside the top k.
    """
    # Pure Python: k <= 20 floats per token, on the request path, where numpy's per-call
    # overhead costs more than the arithmetic.
    cands = [c / temperature for c in top]
    if chosen not in top:
        cands.append(chosen / temperature)
    peak = max(cands)
    return chosen / temperature - (peak + math.log(sum(math.exp(c - peak) for c in cands)))
