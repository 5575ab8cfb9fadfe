from __future__ import annotations

import numpy as np
import pytest

from calibration import apgr_score, cpt, routing_curve


def test_a_perfect_router_and_a_random_one() -> None:
    rng = np.random.default_rng(0)
    student = (rng.uniform(size=2000) < 0.8).astype(float)
    teacher = np.ones(2000)
    perfect = routing_curve(student, teacher, student + rng.uniform(0, 0.1, 2000))
    assert cpt(perfect, 0.5) == pytest.approx(0.1, abs=0.01)  # half of the 20 % errors
    assert apgr_score(perfect) > 0.85
    random = routing_curve(student, teacher, rng.uniform(size=2000))
    assert apgr_score(random) == pytest.approx(0.5, abs=0.05)
    assert cpt(random, 0.5) == pytest.approx(0.5, abs=0.07)


def test_the_curve_runs_from_student_to_teacher() -> None:
    curve = routing_curve([1, 0, 1, 0], [1, 1, 0, 1], [0.9, 0.1, 0.8, 0.2])
    assert curve.accuracy[0] == curve.student_accuracy == 0.5
    assert curve.accuracy[-1] == curve.teacher_accuracy == 0.75
    assert list(curve.pgr[[0, -1]]) == [0.0, 1.0]


def test_no_gap_is_an_error() -> None:
    with pytest.raises(ValueError, match="no gap"):
        _ = routing_curve([1, 1], [1, 0], [0.5, 0.6]).pgr
