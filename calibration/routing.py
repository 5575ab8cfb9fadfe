"""Routing quality (RouteLLM's definitions): how much of the student-teacher gap a
confidence-ordered router recovers per share of requests sent to the teacher.

PGR(c) = (routed(c) - student) / (teacher - student), where routed(c) is the accuracy when
the least confident share c of requests goes to the teacher. APGR is the area under
PGR over c in [0, 1]; CPT(x) the smallest c with PGR(c) >= x. Random routing scores
APGR 0.5 and CPT(x) = x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["RoutingCurve", "apgr_score", "cpt", "routing_curve"]


@dataclass(frozen=True)
class RoutingCurve:
    teacher_share: NDArray[np.float64]  # 0, 1/n, ..., 1
    accuracy: NDArray[np.float64]
    student_accuracy: float
    teacher_accuracy: float

    @property
    def pgr(self) -> NDArray[np.float64]:
        gap = self.teacher_accuracy - self.student_accuracy
        if gap <= 0:
            raise ValueError("the teacher is not more accurate than the student: no gap to recover")
        return (self.accuracy - self.student_accuracy) / gap


def routing_curve(
    student_correct: ArrayLike, teacher_correct: ArrayLike, confidence: ArrayLike
) -> RoutingCurve:
    s = np.asarray(student_correct, dtype=np.float64).ravel()
    t = np.asarray(teacher_correct, dtype=np.float64).ravel()
    c = np.asarray(confidence, dtype=np.float64).ravel()
    if not (s.shape == t.shape == c.shape) or s.size == 0:
        raise ValueError(
            "student_correct, teacher_correct and confidence must be non-empty and equal in length"
        )
    order = np.argsort(c, kind="stable")  # least confident go to the teacher first
    gain = np.r_[0.0, np.cumsum(t[order] - s[order])]
    n = s.size
    return RoutingCurve(
        np.arange(n + 1) / n, (s.sum() + gain) / n, float(s.mean()), float(t.mean())
    )


def apgr_score(curve: RoutingCurve) -> float:
    pgr, share = curve.pgr, curve.teacher_share
    return float(np.sum((pgr[1:] + pgr[:-1]) / 2 * np.diff(share)))


def cpt(curve: RoutingCurve, recovered: float) -> float:
    """Smallest teacher share recovering ``recovered`` (e.g. 0.5) of the gap."""
    hits = np.nonzero(curve.pgr >= recovered - 1e-12)[0]
    return float(curve.teacher_share[hits[0]]) if hits.size else 1.0
