from __future__ import annotations

import numpy as np
import pytest

from calibration import NotFittedError, ThresholdSelector
from calibration.threshold import NEVER, binomial_cdf, clopper_pearson_upper


def test_binomial_cdf_and_bound() -> None:
    assert binomial_cdf(0, 10, 0.5) == pytest.approx(0.5**10)
    assert binomial_cdf(10, 10, 0.3) == 1.0
    assert binomial_cdf(3, 10, 0.3) == pytest.approx(0.6496107184, rel=1e-8)
    # zero errors in n: the bound is 1 - delta^(1/n)
    assert clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-6)


def calibrated_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    conf = rng.beta(5, 1, n)
    correct = (rng.uniform(size=n) < conf).astype(float)
    return conf, correct


def test_the_guarantee_holds_on_fresh_data() -> None:
    """Over many calibration draws, the accepted error exceeds 1 - target in <= delta of them."""
    target, delta, misses, trials = 0.9, 0.1, 0, 200
    for seed in range(trials):
        conf, correct = calibrated_data(600, seed)
        selector = ThresholdSelector(target_accuracy=target, delta=delta).fit(conf, correct)
        # true accepted accuracy under this data model: E[conf | conf >= t]
        test_conf, test_correct = calibrated_data(50_000, 10_000 + seed)
        accepted = selector.predict(test_conf)
        if accepted.any() and test_correct[accepted].mean() < target:
            misses += 1
    assert misses / trials <= delta


def test_a_stricter_target_accepts_less() -> None:
    conf, correct = calibrated_data(3000, 1)
    loose = ThresholdSelector(target_accuracy=0.85).fit(conf, correct)
    strict = ThresholdSelector(target_accuracy=0.97).fit(conf, correct)
    assert strict.threshold_ > loose.threshold_ and strict.coverage_ < loose.coverage_
    assert strict.certified_ and strict.error_bound_ <= 0.03 + 1e-9


def test_an_unreachable_target_escalates_everything() -> None:
    conf, correct = calibrated_data(200, 2)
    selector = ThresholdSelector(target_accuracy=0.999).fit(conf, correct)
    assert not selector.certified_ and selector.threshold_ == NEVER
    assert not selector.predict(np.array([1.0])).any()


def test_budget_form_escalates_at_most_the_budget() -> None:
    conf, correct = calibrated_data(1000, 3)
    selector = ThresholdSelector(max_escalation=0.1).fit(conf, correct)
    assert (conf < selector.threshold_).mean() <= 0.1
    assert (conf < selector.threshold_).mean() >= 0.09


def test_parameters_are_checked_in_fit() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ThresholdSelector().fit([0.5], [1])
    with pytest.raises(ValueError):
        ThresholdSelector(target_accuracy=1.5).fit([0.5], [1])
    with pytest.raises(NotFittedError):
        ThresholdSelector(target_accuracy=0.9).predict([0.5])
