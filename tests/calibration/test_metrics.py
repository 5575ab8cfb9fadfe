from __future__ import annotations

import numpy as np
import pytest

from calibration import (
    aurc_loss,
    brier_score_loss,
    expected_calibration_error,
    log_loss,
    maximum_calibration_error,
    reliability_curve,
    risk_coverage_curve,
)


def test_ece_is_zero_when_confidence_equals_accuracy_in_every_bin() -> None:
    # 10 answers at 0.8 confidence, 8 right; 10 at 0.3, 3 right
    y = np.r_[np.ones(8), np.zeros(2), np.ones(3), np.zeros(7)]
    p = np.r_[np.full(10, 0.8), np.full(10, 0.3)]
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    assert maximum_calibration_error(y, p) == pytest.approx(0.0)


def test_ece_of_an_overconfident_model() -> None:
    y = np.r_[np.ones(6), np.zeros(4)]
    p = np.full(10, 0.9)
    assert expected_calibration_error(y, p) == pytest.approx(0.3)
    assert brier_score_loss(y, p) == pytest.approx((6 * 0.01 + 4 * 0.81) / 10)


def test_ece_is_count_weighted_and_mce_is_the_worst_bin() -> None:
    y = np.r_[np.ones(9), np.zeros(1), np.ones(1)]
    p = np.r_[np.full(10, 0.95), [0.05]]
    curve = reliability_curve(y, p)
    assert list(curve.count) == [1, 10]
    assert expected_calibration_error(y, p) == pytest.approx((0.95 * 1 + 0.05 * 10) / 11)
    assert maximum_calibration_error(y, p) == pytest.approx(0.95)


def test_bins_are_15_equal_width_by_default() -> None:
    p = np.linspace(0.001, 0.999, 300)
    assert len(reliability_curve(np.ones(300), p).count) == 15


def test_log_loss_prefers_honest_confidence() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, 5000)
    y = (rng.uniform(size=5000) < p).astype(float)
    assert log_loss(y, p) < log_loss(y, np.clip(p + 0.2, 0, 0.999))


def test_risk_coverage_and_aurc() -> None:
    y = np.array([1, 1, 0, 1, 0], dtype=float)
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    coverage, risk, thresholds = risk_coverage_curve(y, p)
    assert list(coverage) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert risk == pytest.approx([0, 0, 1 / 3, 1 / 4, 2 / 5])
    assert list(thresholds) == list(p)
    assert aurc_loss(y, p) == pytest.approx(np.mean([0, 0, 1 / 3, 1 / 4, 2 / 5]))
    # a perfect ranking (errors least confident) has the lowest AURC
    assert aurc_loss(y, np.array([0.9, 0.8, 0.1, 0.7, 0.2])) < aurc_loss(y, p)


def test_ties_are_accepted_together() -> None:
    coverage, risk, _ = risk_coverage_curve([1, 0, 1], [0.5, 0.5, 0.9])
    assert list(coverage) == pytest.approx([1 / 3, 1.0])
    assert list(risk) == pytest.approx([0.0, 1 / 3])


@pytest.mark.parametrize(
    "metric", [expected_calibration_error, brier_score_loss, log_loss, aurc_loss]
)
def test_bad_input_raises_value_error(metric) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        metric([1, 0], [0.5])
    with pytest.raises(ValueError):
        metric([1, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        metric([1, 0], [0.5, 1.5])
