"""Calibration and selective-prediction metrics: pure functions of ``(y_true, y_prob)``.

``y_true`` is 1 where the answer was correct, 0 where not; ``y_prob`` is the confidence
given to that answer. The naming law is scikit-learn's: ``*_score`` higher is better,
``*_loss`` / ``*_error`` lower is better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ReliabilityCurve",
    "accuracy_score",
    "aurc_loss",
    "brier_score_loss",
    "expected_calibration_error",
    "log_loss",
    "maximum_calibration_error",
    "reliability_curve",
    "risk_coverage_curve",
]


def _check(y_true: ArrayLike, y_prob: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_prob differ in length: {t.size} vs {p.size}")
    if t.size == 0:
        raise ValueError("need at least one sample")
    if not np.isin(t, (0.0, 1.0)).all():
        raise ValueError("y_true must hold 0 (wrong) and 1 (correct) only")
    if (p < 0).any() or (p > 1).any() or np.isnan(p).any():
        raise ValueError("y_prob must lie in [0, 1]")
    return t, p


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per equal-width bin: mean confidence, accuracy and count (empty bins are omitted)."""

    confidence: NDArray[np.float64]
    accuracy: NDArray[np.float64]
    count: NDArray[np.int64]
    edges: NDArray[np.float64]


def reliability_curve(
    y_true: ArrayLike, y_prob: ArrayLike, *, n_bins: int = 15
) -> ReliabilityCurve:
    t, p = _check(y_true, y_prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins, the first one also closed on the left: (a, b], with 0 in bin 0
    idx = np.clip(np.searchsorted(edges, p, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf = np.bincount(idx, weights=p, minlength=n_bins)
    acc = np.bincount(idx, weights=t, minlength=n_bins)
    keep = count > 0
    return ReliabilityCurve(conf[keep] / count[keep], acc[keep] / count[keep], count[keep], edges)


def expected_calibration_error(y_true: ArrayLike, y_prob: ArrayLike, *, n_bins: int = 15) -> float:
    """Count-weighted mean |accuracy - confidence| over equal-width bins (Guo et al. 2017)."""
    curve = reliability_curve(y_true, y_prob, n_bins=n_bins)
    gaps = np.abs(curve.accuracy - curve.confidence)
    return float(np.sum(gaps * curve.count) / np.sum(curve.count))


def maximum_calibration_error(y_true: ArrayLike, y_prob: ArrayLike, *, n_bins: int = 15) -> float:
    curve = reliability_curve(y_true, y_prob, n_bins=n_bins)
    return float(np.max(np.abs(curve.accuracy - curve.confidence)))


def accuracy_score(y_true: ArrayLike) -> float:
    t = np.asarray(y_true, dtype=np.float64)
    if t.size == 0:
        raise ValueError("need at least one sample")
    return float(t.mean())


def brier_score_loss(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    t, p = _check(y_true, y_prob)
    return float(np.mean((p - t) ** 2))


def log_loss(y_true: ArrayLike, y_prob: ArrayLike, *, eps: float = 1e-12) -> float:
    """Binary negative log-likelihood of correctness under the confidence."""
    t, p = _check(y_true, y_prob)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def risk_coverage_curve(
    y_true: ArrayLike, y_prob: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Accept the most confident answers first: (coverage, risk of the accepted, threshold).

    Point i accepts every answer with confidence >= threshold[i]; ties are accepted together.
    """
    t, p = _check(y_true, y_prob)
    order = np.argsort(-p, kind="stable")
    p_sorted, errors = p[order], 1.0 - t[order]
    cum_err = np.cumsum(errors)
    n = np.arange(1, t.size + 1)
    last_of_tie = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    coverage = n[last_of_tie] / t.size
    risk = cum_err[last_of_tie] / n[last_of_tie]
    return coverage.astype(np.float64), risk, p_sorted[last_of_tie]


def aurc_loss(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Area under the risk-coverage curve: mean risk over coverage levels 1/n..1."""
    t, p = _check(y_true, y_prob)
    order = np.argsort(-p, kind="stable")
    errors = 1.0 - t[order]
    risk_at_k = np.cumsum(errors) / np.arange(1, t.size + 1)
    return float(risk_at_k.mean())
