"""The logistic calibrator: it recovers a known model, stays finite on separable data,
round-trips through JSON, and on length-biased free text it is calibrated where one
temperature on the sequence probability cannot be."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration import (
    LogisticCalibrator,
    NotFittedError,
    expected_calibration_error,
    log_loss,
    text_features,
)


def test_it_recovers_a_known_logistic_model() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2)) * [1.0, 3.0] + [0.0, 5.0]
    truth = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 0.5 * (x[:, 1] - 5.0) + 0.5)))
    y = (rng.random(len(truth)) < truth).astype(float)
    model = LogisticCalibrator().fit(x, y)
    assert np.abs(model.predict_proba(x) - truth).mean() < 0.01
    assert model.nll_ == pytest.approx(log_loss(y, model.predict_proba(x)), rel=1e-6)


def test_separable_answers_keep_finite_weights_and_json_round_trips() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0.0, 0.0, 1.0, 1.0])
    model = LogisticCalibrator().fit(x, y)
    p = model.predict_proba(x)
    assert np.isfinite(model.coef_).all() and p[3] > 0.7 and p[0] < 0.3 and (np.diff(p) > 0).all()
    again = LogisticCalibrator.from_json(model.to_json())
    assert np.allclose(again.predict_proba(x), model.predict_proba(x))


def test_bad_input_and_an_unfitted_calibrator_are_refused() -> None:
    with pytest.raises(NotFittedError):
        LogisticCalibrator().predict_proba([[1.0]])
    for x, y in (([1.0, 2.0], [0, 1]), ([[1.0], [2.0]], [0, 2]), ([[np.nan]], [1])):
        with pytest.raises(ValueError):
            LogisticCalibrator().fit(x, y)


def _free_text(rng: np.random.Generator, n: int) -> tuple[list[list[float]], np.ndarray]:
    """Answers of 5-60 tokens: a good one's tokens are surer, and one unsure token (a
    wrong value) is what a judge rejects; length says nothing of quality."""
    answers, accepted = [], []
    for _ in range(n):
        length = int(rng.integers(5, 60))
        good = rng.random() < 0.7
        lp = -rng.exponential(0.08 if good else 0.2, size=length)
        if not good:
            lp[rng.integers(length)] = -rng.uniform(1.5, 4.0)  # the slip
        answers.append(list(lp))
        accepted.append(float(good if rng.random() < 0.95 else not good))
    return answers, np.array(accepted)


def test_on_length_biased_free_text_it_beats_one_temperature_on_the_sequence() -> None:
    rng = np.random.default_rng(1)
    train, y_train = _free_text(rng, 3000)
    test, y_test = _free_text(rng, 3000)
    model = LogisticCalibrator().fit([text_features(a) for a in train], y_train)
    p_logistic = model.predict_proba([text_features(a) for a in test])

    def sequence(answers: list[list[float]], t: float) -> np.ndarray:
        return np.array([math.exp(min(sum(a) / t, 0.0)) for a in answers])

    # the best single T for exp(sum of logprobs / T), chosen on the training answers
    grid = np.exp(np.linspace(math.log(0.2), math.log(50.0), 200))
    best_t = min(grid, key=lambda t: log_loss(y_train, np.clip(sequence(train, t), 1e-6, 1 - 1e-6)))
    p_temperature = np.clip(sequence(test, best_t), 1e-6, 1 - 1e-6)
    assert log_loss(y_test, p_logistic) < log_loss(y_test, p_temperature) - 0.05
    assert expected_calibration_error(y_test, p_logistic) < 0.03
    assert expected_calibration_error(y_test, p_temperature) > 0.05
