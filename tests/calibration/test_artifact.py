from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from calibration import (
    Calibration,
    LogisticCalibrator,
    confidence,
    load_calibration,
    renormalized_logprob,
    save_calibration,
    student_fingerprint,
    text_features,
)
from calibration.temperature import log_softmax


def fake_student(path: Path, weights: bytes = b"w") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (path / name).write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_round_trip_and_fingerprint_check(tmp_path: Path) -> None:
    student = fake_student(tmp_path / "s")
    cal = Calibration(
        temperature=1.3,
        threshold=0.8,
        student_fingerprint=student_fingerprint(student),
        target_accuracy=0.97,
    )
    save_calibration(cal, tmp_path / "c.json")
    assert load_calibration(tmp_path / "c.json", student_dir=student) == cal
    other = fake_student(tmp_path / "other", weights=b"different")
    with pytest.raises(ValueError, match="recalibrate"):
        load_calibration(tmp_path / "c.json", student_dir=other)


def test_bad_artifacts_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="version"):
        load_calibration(path)
    path.write_text(json.dumps({"version": 1, "temperature": 1.0}))
    with pytest.raises(ValueError, match="malformed"):
        load_calibration(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="cannot read"):
        load_calibration(path)


def test_confidence_features() -> None:
    lp = [math.log(0.9), math.log(0.5)]
    assert confidence(lp) == pytest.approx(0.45)
    assert confidence(lp, "mean_token") == pytest.approx(math.sqrt(0.45))
    assert confidence(lp, "min_token") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        confidence([])


def test_top_k_renormalisation_matches_the_full_softmax_when_k_covers_the_mass() -> None:
    z = np.array([5.0, 3.0, 1.0, -20.0, -25.0])
    raw = log_softmax(z)
    for t in (0.5, 1.0, 2.0):
        exact = log_softmax(z, t)[0]
        approx = renormalized_logprob(raw[0], list(raw[:3]), t)
        assert approx == pytest.approx(exact, abs=1e-5)  # the left-out mass is ~e^-12.5
    # with little of the mass in the top-k, it overstates the probability
    flat = log_softmax(np.zeros(100))
    assert renormalized_logprob(flat[0], list(flat[:5]), 1.0) > flat[0]


def test_a_text_calibrator_round_trips_and_gives_the_logistic_models_probability(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    answers = [list(-rng.exponential(0.1 + 0.3 * (i % 2), size=5 + i % 30)) for i in range(400)]
    accepted = np.array([float(i % 2 == 0) for i in range(400)])
    model = LogisticCalibrator().fit([text_features(a) for a in answers], accepted)
    cal = Calibration(
        temperature=1.0,
        threshold=0.6,
        student_fingerprint="sha256:x",
        feature="text",
        logistic=model.to_json(),
    )
    save_calibration(cal, tmp_path / "c.json")
    loaded = load_calibration(tmp_path / "c.json")
    assert loaded == cal
    expected = model.predict_proba([text_features(a) for a in answers[:10]])
    got = [loaded.confidence(a) for a in answers[:10]]
    assert np.allclose(got, expected) and 0 < min(got) < 0.5 < max(got) < 1
    broken = json.loads((tmp_path / "c.json").read_text())
    broken["logistic"]["coef"] = [1.0]
    (tmp_path / "c.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="coefficients"):
        load_calibration(tmp_path / "c.json")
