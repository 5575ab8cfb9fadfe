"""Reliability diagram and risk-coverage plot; figures are returned, the caller saves them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from calibration.metrics import expected_calibration_error, reliability_curve, risk_coverage_curve

__all__ = ["quality_cost_figure", "reliability_figure", "risk_coverage_figure"]


def reliability_figure(
    y_true: ArrayLike, curves: Mapping[str, ArrayLike], *, n_bins: int = 15, title: str = ""
) -> Figure:
    """One panel per confidence (e.g. before / after scaling): accuracy vs confidence per bin."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 4.5), squeeze=False)
    for ax, (name, prob) in zip(axes[0], curves.items(), strict=True):
        curve = reliability_curve(y_true, prob, n_bins=n_bins)
        ece = expected_calibration_error(y_true, prob, n_bins=n_bins)
        width = 1.0 / n_bins
        ax.bar(
            curve.confidence,
            curve.accuracy,
            width=width * 0.9,
            alpha=0.7,
            edgecolor="black",
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            ylabel="accuracy",
            title=f"{name}: ECE {ece:.3f}",
        )
        ax.legend(loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def risk_coverage_figure(
    y_true: ArrayLike, curves: Mapping[str, ArrayLike], *, threshold_coverage: float | None = None
) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, prob in curves.items():
        coverage, risk, _ = risk_coverage_curve(y_true, prob)
        ax.plot(coverage, risk, label=name)
    if threshold_coverage is not None:
        ax.axvline(threshold_coverage, color="grey", linestyle=":", label="chosen threshold")
    ax.set(
        xlabel="coverage (share answered by the student)",
        ylabel="risk (error of accepted)",
        xlim=(0, 1),
    )
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    return fig


def quality_cost_figure(
    teacher_share: Sequence[float],
    accuracy: Sequence[float],
    *,
    student: float,
    teacher: float,
    chosen: tuple[float, float] | None = None,
) -> Figure:
    """Routed accuracy as the share of requests sent to the teacher grows."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(teacher_share, accuracy, label="routed by confidence")
    ax.plot([0, 1], [student, teacher], "k--", linewidth=1, label="random routing")
    if chosen is not None:
        ax.plot(*chosen, "o", color="red", label="calibrated threshold")
    ax.set(xlabel="share of requests sent to the teacher", ylabel="accuracy", xlim=(0, 1))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
