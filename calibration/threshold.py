"""Choose the accept threshold from data: for a target accepted-answer accuracy with a
finite-sample guarantee, or for an escalation budget."""

from __future__ import annotations

import math
from typing import Self

import numpy as np
from numpy.typing import ArrayLike

from calibration.temperature import NotFittedError

__all__ = ["ThresholdSelector", "binomial_cdf", "clopper_pearson_upper", "power_n"]

NEVER = math.nextafter(1.0, 2.0)  # a threshold no confidence reaches: escalate everything


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) <= k)."""
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k + 1)
    logs = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in i])
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
    )
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def power_n(alpha: float, delta: float) -> int:
    """Fewest samples for which errors at rate alpha / 2 would reject H0 "error > alpha"."""
    n = math.ceil(math.log(delta) / math.log1p(-alpha))  # zero errors: the least possible
    while binomial_cdf(math.floor(alpha / 2 * n), n, alpha) > delta:
        n += 1
    return n


def clopper_pearson_upper(k: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) upper confidence bound on a rate, from k events in n trials."""
    if n == 0:
        return 1.0
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if binomial_cdf(k, n, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


class ThresholdSelector:
    """Accept an answer when its confidence is >= ``threshold_``.

    Give exactly one of:

    target_accuracy : the lowest threshold whose accepted answers have error <= 1 - target
        with probability >= 1 - delta (Learn-then-Test: binomial tests of
        H0 "error > 1 - target", run in fixed sequence from strict to loose thresholds,
        stopping at the first that cannot be rejected). A test on a handful of accepted
        answers has no power (one error in 100 cannot certify 97 %), and fixed-sequence
        testing stops at its first failure, so the sequence starts at the first threshold
        accepting ``power_n`` answers: the fewest for which an error rate of half the
        allowed one would be certified. That start depends on the target, delta and the
        confidences' order only, never on the labels, so the guarantee is kept.
    max_escalation : the share of traffic that may be escalated: the threshold is that
        quantile of the confidences.

    Attributes
    ----------
    threshold_ : float
    coverage_ : share of the fitting data accepted.
    accepted_accuracy_ : accuracy of the accepted fitting data (nan if none).
    error_bound_ : Clopper-Pearson (1 - delta) upper bound on the accepted error.
    certified_ : False when no threshold met the target (everything escalates).
    n_ : samples fitted on.
    """

    def __init__(
        self,
        *,
        target_accuracy: float | None = None,
        max_escalation: float | None = None,
        delta: float = 0.05,
    ) -> None:
        self.target_accuracy = target_accuracy
        self.max_escalation = max_escalation
        self.delta = delta

    def fit(self, confidence: ArrayLike, correct: ArrayLike) -> Self:
        conf = np.asarray(confidence, dtype=np.float64).ravel()
        ok = np.asarray(correct, dtype=np.float64).ravel()
        if conf.shape != ok.shape or conf.size == 0:
            raise ValueError("confidence and correct must be non-empty and of equal length")
        if (self.target_accuracy is None) == (self.max_escalation is None):
            raise ValueError("give exactly one of target_accuracy and max_escalation")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if self.target_accuracy is not None:
            if not 0 < self.target_accuracy < 1:
                raise ValueError(f"target_accuracy must be in (0, 1), got {self.target_accuracy}")
            self.threshold_, self.certified_ = self._by_target(conf, ok, 1 - self.target_accuracy)
        else:
            assert self.max_escalation is not None
            if not 0 <= self.max_escalation <= 1:
                raise ValueError(f"max_escalation must be in [0, 1], got {self.max_escalation}")
            self.threshold_, self.certified_ = self._by_budget(conf, self.max_escalation), True
        accepted = conf >= self.threshold_
        n_acc, errors = int(accepted.sum()), int((1 - ok[accepted]).sum())
        self.n_ = int(conf.size)
        self.coverage_ = n_acc / conf.size
        self.accepted_accuracy_ = 1 - errors / n_acc if n_acc else float("nan")
        self.error_bound_ = clopper_pearson_upper(errors, n_acc, self.delta)
        return self

    def _by_target(self, conf: np.ndarray, ok: np.ndarray, alpha: float) -> tuple[float, bool]:
        order = np.argsort(-conf, kind="stable")
        c, err = conf[order], np.cumsum(1 - ok[order])
        n_min = power_n(alpha, self.delta)
        best, certified = NEVER, False
        for i in range(conf.size):
            if i + 1 < conf.size and c[i + 1] == c[i]:
                continue  # ties are accepted together
            n = i + 1
            if n < n_min:
                continue  # too few accepted to test: not yet in the sequence
            if binomial_cdf(int(err[i]), n, alpha) > self.delta:
                break  # first hypothesis not rejected: the sequence stops
            best, certified = float(c[i]), True
        return best, certified

    @staticmethod
    def _by_budget(conf: np.ndarray, budget: float) -> float:
        ordered = np.sort(conf)
        k = math.floor(budget * conf.size)
        return NEVER if k >= conf.size else float(ordered[k])

    def predict(self, confidence: ArrayLike) -> np.ndarray:
        """True where the answer is accepted."""
        if not hasattr(self, "threshold_"):
            raise NotFittedError("ThresholdSelector is not fitted yet; call fit first")
        return np.asarray(confidence, dtype=np.float64) >= self.threshold_
