from __future__ import annotations

import numpy as np
import pytest

from calibration import AnswerTemperatureScaler, NotFittedError, TemperatureScaler
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


def _answers(rng: np.random.Generator, n: int, true_t: float) -> tuple[list, list, np.ndarray]:  # type: ignore[type-arg]
    """Answers whose correctness is drawn from their sequence probability at ``true_t``."""
    logits, targets, correct = [], [], []
    for _ in range(n):
        z = rng.normal(0, 3, size=(2, 6))
        t = z.argmax(axis=1)
        p = np.exp(log_softmax(z, true_t)[np.arange(2), t].sum())
        logits.append(z)
        targets.append(t)
        correct.append(float(rng.random() < p))
    return logits, targets, np.array(correct)


def test_answer_scaler_recovers_the_temperature_that_calibrates_answers() -> None:
    rng = np.random.default_rng(0)
    logits, targets, correct = _answers(rng, 3000, true_t=2.0)
    scaler = AnswerTemperatureScaler().fit(logits, targets, correct)
    assert scaler.temperature_ == pytest.approx(2.0, rel=0.15)
    assert scaler.nll_after_ <= scaler.nll_before_ + 1e-9
    assert scaler.n_answers_ == 3000


def test_answer_scaler_checks_its_input() -> None:
    z, t = [np.zeros((2, 3))], [np.array([0, 1])]
    with pytest.raises(ValueError):
        AnswerTemperatureScaler().fit(z, t, np.array([0.5]))
    with pytest.raises(ValueError):
        AnswerTemperatureScaler().fit(z, t, np.array([1.0, 0.0]))
    with pytest.raises(ValueError):
        AnswerTemperatureScaler(bounds=(2.0, 1.0)).fit(z, t, np.array([1.0]))
