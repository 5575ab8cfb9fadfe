"""Temperature scaling (Guo et al. 2017) for a language model's next-token distribution.

Two objectives for the one scalar T, both NLL on held-out labelled data:

- ``TemperatureScaler``: NLL of the *reference* answer's tokens (teacher forcing). The
  classic language-model form; it fits the student's token distribution.
- ``AnswerTemperatureScaler``: NLL of whether the student's *own* answer was right, under
  its sequence probability at T. This is the event the gateway decides on, and the one
  used by ``distillgate calibrate``. The two agree on a student that knows the task
  (demo student: T = 1.10 vs 1.14); they part when some references are out of the
  student's reach, e.g. intents it never saw: the reference tokens then drive T up until
  every answer looks doubtful (a weak Banking77 student: token T = 1.75, ECE 0.16 -> 0.26;
  answer T = 1.30, ECE 0.16 -> 0.09; benchmarks/temperature_objectives.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["AnswerTemperatureScaler", "NotFittedError", "TemperatureScaler", "log_softmax"]


class NotFittedError(ValueError, AttributeError):
    """Raised when an estimator is used before ``fit``."""


def log_softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> NDArray[np.float64]:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    out: NDArray[np.float64] = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return out


def _check_bounds(bounds: tuple[float, float]) -> None:
    if not 0 < bounds[0] < bounds[1]:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")


def _minimise(f: Callable[[float], float], a: float, b: float, *, grid: int = 1) -> float:
    """Golden-section search on [a, b]; with ``grid`` > 1, first bracket the best of a
    coarse grid, for objectives that are not unimodal."""
    if grid > 1:
        xs = np.linspace(a, b, grid)
        best = int(np.argmin([f(float(x)) for x in xs]))
        a, b = float(xs[max(best - 1, 0)]), float(xs[min(best + 1, grid - 1)])
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


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
        _check_bounds(self.bounds)
        if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[0] == 0:
            raise ValueError(
                "logits must be [n_tokens, vocab] and targets [n_tokens], n_tokens > 0"
            )
        if (y < 0).any() or (y >= z.shape[1]).any():
            raise ValueError("targets must be token ids inside the vocabulary")

        def nll(log_t: float) -> float:
            lp = log_softmax(z, math.exp(log_t))
            return float(-lp[np.arange(y.size), y].mean())

        self.temperature_ = math.exp(_minimise(nll, math.log(low), math.log(high)))
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


class AnswerTemperatureScaler:
    """One scalar T, fitted by minimising the NLL of the student's answers being right.

    Each answer's confidence is its sequence probability at T,
    ``exp(sum_t log softmax(z_t / T)[y_t])`` over its tokens (end token included); the
    objective is the binary NLL of ``correct`` under those confidences. Not convex in T in
    general, so a coarse grid over log T brackets the optimum before golden-section search.

    Parameters
    ----------
    bounds : (low, high) for T.

    Attributes
    ----------
    temperature_ : float
    nll_before_, nll_after_ : mean binary NLL at T = 1 and at the fitted T.
    n_answers_ : number of answers fitted on.
    """

    def __init__(self, *, bounds: tuple[float, float] = (0.05, 20.0)) -> None:
        self.bounds = bounds

    def fit(
        self,
        logits: Sequence[ArrayLike],
        targets: Sequence[ArrayLike],
        correct: ArrayLike,
    ) -> Self:
        """Per answer: ``logits`` [n_tokens, vocab], ``targets`` [n_tokens] (its own tokens);
        ``correct``: [n_answers] of 0/1."""
        _check_bounds(self.bounds)
        y = np.asarray(correct, dtype=np.float64)
        if len(logits) != len(targets) or len(logits) != y.size or y.size == 0:
            raise ValueError("logits, targets and correct need one entry per answer, n > 0")
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("correct must hold 0/1 values")
        zs = [np.asarray(z, dtype=np.float64) for z in logits]
        ts = [np.asarray(t, dtype=np.int64) for t in targets]
        for z, t in zip(zs, ts, strict=True):
            if z.ndim != 2 or t.shape != (z.shape[0],) or t.size == 0:
                raise ValueError(
                    "each answer needs logits [n_tokens, vocab] and targets [n_tokens]"
                )
        z_all, t_all = np.concatenate(zs), np.concatenate(ts)
        starts = np.cumsum([0, *(t.size for t in ts[:-1])])

        def nll(log_t: float) -> float:
            token_lp = log_softmax(z_all, math.exp(log_t))[np.arange(t_all.size), t_all]
            log_p = np.minimum(np.add.reduceat(token_lp, starts), -1e-12)
            log_not = np.log(-np.expm1(log_p))
            return float(-(y * log_p + (1 - y) * log_not).mean())

        low, high = self.bounds
        self.temperature_ = math.exp(_minimise(nll, math.log(low), math.log(high), grid=25))
        self.nll_before_ = nll(0.0)
        self.nll_after_ = nll(math.log(self.temperature_))
        self.n_answers_ = int(y.size)
        return self
