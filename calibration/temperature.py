"""Temperature scaling (Guo et al. 2017) for a language model's next-token distribution."""

from __future__ import annotations

import math
from typing import Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["NotFittedError", "TemperatureScaler", "log_softmax"]


class NotFittedError(ValueError, AttributeError):
    """Raised when an estimator is used before ``fit``."""


def log_softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> NDArray[np.float64]:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    out: NDArray[np.float64] = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return out


class TemperatureScaler:
    """One scalar T for a task, fitted by minimising the NLL of reference tokens.

    Fit on the full-vocabulary logits of each reference-answer token, scored under the
    student with teacher forcing; a sequence's NLL is the sum of its tokens', so
    concatenating every answer's tokens gives the sequence-level objective exactly.
    NLL is convex in 1/T, so a bounded golden-section search finds the optimum.

    Parameters
    ----------
    bounds : (low, high) for T.

    Attributes
    ----------
    temperature_ : float
    nll_before_, nll_after_ : mean NLL per token at T = 1 and at the fitted T.
    n_tokens_ : number of tokens fitted on.
    """

    def __init__(self, *, bounds: tuple[float, float] = (0.05, 20.0)) -> None:
        self.bounds = bounds

    def fit(self, logits: ArrayLike, targets: ArrayLike) -> Self:
        """``logits``: [n_tokens, vocab]; ``targets``: [n_tokens] token ids."""
        z = np.asarray(logits, dtype=np.float64)
        y = np.asarray(targets, dtype=np.int64)
        low, high = self.bounds
        if not 0 < low < high:
            raise ValueError(f"bounds must satisfy 0 < low < high, got {self.bounds}")
        if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[0] == 0:
            raise ValueError(
                "logits must be [n_tokens, vocab] and targets [n_tokens], n_tokens > 0"
            )
        if (y < 0).any() or (y >= z.shape[1]).any():
            raise ValueError("targets must be token ids inside the vocabulary")

        def nll(log_t: float) -> float:
            lp = log_softmax(z, math.exp(log_t))
            return float(-lp[np.arange(y.size), y].mean())

        a, b = math.log(low), math.log(high)
        ratio = (math.sqrt(5) - 1) / 2
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        fc, fd = nll(c), nll(d)
        for _ in range(60):
            if fc < fd:
                b, d, fd = d, c, fc
                c = b - ratio * (b - a)
                fc = nll(c)
            else:
                a, c, fc = c, d, fd
                d = a + ratio * (b - a)
                fd = nll(d)
        self.temperature_ = math.exp((a + b) / 2)
        self.nll_before_ = nll(0.0)
        self.nll_after_ = nll(math.log(self.temperature_))
        self.n_tokens_ = int(y.size)
        return self

    def _check_fitted(self) -> float:
        if not hasattr(self, "temperature_"):
            raise NotFittedError("TemperatureScaler is not fitted yet; call fit first")
        return float(self.temperature_)

    def predict_proba(self, logits: ArrayLike) -> NDArray[np.float64]:
        """softmax(z / T) over the last axis."""
        return np.exp(log_softmax(np.asarray(logits, dtype=np.float64), self._check_fitted()))

    def score_tokens(self, logits: ArrayLike, targets: ArrayLike) -> NDArray[np.float64]:
        """log softmax(z / T)[target] for each row."""
        lp = log_softmax(np.asarray(logits, dtype=np.float64), self._check_fitted())
        y = np.asarray(targets, dtype=np.int64)
        return lp[np.arange(y.size), y]
