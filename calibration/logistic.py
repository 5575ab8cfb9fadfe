"""A logistic calibrator: the probability that an answer is accepted (by exact match, or by
a judge for free text) from several confidence features at once.

For free text the sequence probability falls with length whatever the quality, so one
temperature cannot make it a probability of acceptance; the mean and the least sure token's
log-probability, and the length, together can (``features.text_features``). Fitted by
L2-regularised maximum likelihood (Newton's method on standardised features: the problem
is convex and small, a few features and hundreds to thousands of answers), scikit-learn
style: ``fit``, ``predict_proba``, fitted attributes ending in ``_``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from calibration.temperature import NotFittedError

__all__ = ["LogisticCalibrator"]


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * z))  # stable at both ends
    return out


class LogisticCalibrator:
    """P(accepted | features) = sigmoid(w · standardised(features) + b).

    Parameters
    ----------
    l2 : the penalty ``l2 / 2 * |w|^2`` (not on ``b``) added to the summed NLL, as
        scikit-learn's ``C = 1 / l2``: it keeps the weights finite when the features
        separate the classes, and barely moves a fit on hundreds of answers.

    Attributes
    ----------
    coef_ : [n_features] weights on the standardised features; ``intercept_`` : float.
    mean_, scale_ : the standardisation, from the training features.
    nll_ : mean binary NLL on the training answers at the fit.
    """

    def __init__(self, *, l2: float = 1.0, max_iter: int = 100) -> None:
        self.l2 = l2
        self.max_iter = max_iter

    def fit(self, features: ArrayLike, accepted: ArrayLike) -> Self:
        """``features``: [n_answers, n_features]; ``accepted``: [n_answers] of 0/1."""
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(accepted, dtype=np.float64)
        if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise ValueError("features must be [n_answers, n_features], accepted [n_answers]")
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("accepted must hold 0/1 values")
        if not np.isfinite(x).all():
            raise ValueError("features must be finite")
        self.mean_ = x.mean(axis=0)
        self.scale_ = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        design = np.column_stack([(x - self.mean_) / self.scale_, np.ones(len(y))])
        n = len(y)
        penalty = np.full(design.shape[1], self.l2)
        penalty[-1] = 0.0  # the intercept is free
        theta = np.zeros(design.shape[1])
        for _ in range(self.max_iter):
            p = _sigmoid(design @ theta)
            gradient = design.T @ (p - y) + penalty * theta
            hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hessian, gradient)
            theta -= step
            if np.abs(step).max() < 1e-10:
                break
        self.coef_, self.intercept_ = theta[:-1], float(theta[-1])
        self.nll_ = self._nll(x, y)
        self.n_answers_ = n
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("LogisticCalibrator is not fitted yet; call fit first")

    def decision_function(self, features: ArrayLike) -> NDArray[np.float64]:
        self._check_fitted()
        x = np.asarray(features, dtype=np.float64)
        out: NDArray[np.float64] = ((x - self.mean_) / self.scale_) @ self.coef_ + self.intercept_
        return out

    def predict_proba(self, features: ArrayLike) -> NDArray[np.float64]:
        """[n_answers] probabilities that each answer is accepted."""
        return _sigmoid(self.decision_function(features))

    def predict_one(self, features: Sequence[float]) -> float:
        """``predict_proba`` of one answer in pure Python: on the request path numpy's call
        overhead costs more than a few multiplications."""
        self._check_fitted()
        z = self.intercept_
        for x, w, m, s in zip(features, self.coef_, self.mean_, self.scale_, strict=True):
            z += float(w) * (x - float(m)) / float(s)
        return 0.5 * (1.0 + math.tanh(0.5 * z))

    def _nll(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
        p = np.clip(self.predict_proba(x), 1e-12, 1 - 1e-12)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())

    def to_json(self) -> dict[str, object]:
        """What a calibration artifact stores: enough to predict, nothing to refit."""
        self._check_fitted()
        return {
            "coef": [float(c) for c in self.coef_],
            "intercept": self.intercept_,
            "mean": [float(m) for m in self.mean_],
            "scale": [float(s) for s in self.scale_],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LogisticCalibrator:
        out = cls()
        out.coef_ = np.asarray(data["coef"], dtype=np.float64)
        out.intercept_ = float(data["intercept"])  # type: ignore[arg-type]
        out.mean_ = np.asarray(data["mean"], dtype=np.float64)
        out.scale_ = np.asarray(data["scale"], dtype=np.float64)
        return out
