from __future__ import annotations

import numpy as np
import pytest

from calibration import NotFittedError, TemperatureScaler
from calibration.temperature import log_softmax


def sample(
    true_t: float, n: int = 4000, vocab: int = 20, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose targets are drawn from softmax(z / true_t)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(n, vocab))
    p = np.exp(log_softmax(z, true_t))
    y = np.array([rng.choice(vocab, p=row) for row in p])
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_recovers_the_temperature_that_generated_the_data(true_t: float) -> None:
    z, y = sample(true_t)
    scaler = TemperatureScaler().fit(z, y)
    assert scaler.temperature_ == pytest.approx(true_t, rel=0.1)
    assert scaler.nll_after_ <= scaler.nll_before_ + 1e-9


def test_temperature_one_changes_nothing() -> None:
    z = np.random.default_rng(1).normal(size=(5, 7))
    scaler = TemperatureScaler()
    scaler.temperature_ = 1.0
    assert scaler.predict_proba(z) == pytest.approx(np.exp(log_softmax(z)))
    assert scaler.predict_proba(z).sum(axis=1) == pytest.approx(np.ones(5))


def test_fit_returns_self_and_stays_in_bounds() -> None:
    z, y = sample(50.0, n=500)
    scaler = TemperatureScaler(bounds=(0.1, 5.0))
    assert scaler.fit(z, y) is scaler
    assert 0.1 <= scaler.temperature_ <= 5.0


def test_use_before_fit_and_bad_input() -> None:
    with pytest.raises(NotFittedError):
        TemperatureScaler().predict_proba(np.zeros((1, 3)))
    with pytest.raises(ValueError):
        TemperatureScaler().fit(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError):
        TemperatureScaler(bounds=(2.0, 1.0)).fit(np.zeros((2, 3)), np.array([0, 1]))
