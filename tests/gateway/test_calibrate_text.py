"""`calibrate` on a free-text task: right means the judge accepted; a logistic calibrator on
the answer's token features competes with the temperature by held-out NLL, and wins where
the sequence probability is length-biased."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration import RoutingGoal, load_calibration, save_calibration
from gateway.examples import Example
from gateway.jobs.calibrate import ScoredSet, fit_calibration
from gateway.jobs.replay import StudentAnswer
from gateway.training.scoring import ScoredAnswer


def fake_student(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (path / name).write_text("{}")
    (path / "model.safetensors").write_bytes(b"w")
    return path


def judged_set(n: int = 600, seed: int = 0, *, by_sequence: bool = False) -> ScoredSet:
    """Answers of 5-60 tokens over an 8-token vocabulary. By default an accepted one is
    surer of its tokens on the whole than a rejected one; length says nothing of quality,
    yet it drives the sequence probability (a long good answer looks worse than a short bad
    one). With ``by_sequence`` the judge accepts with the answer's sequence probability at
    T = 0.3 itself: there the temperature is the true model."""
    rng = np.random.default_rng(seed)
    scored, verdicts = [], []
    for _ in range(n):
        length = int(rng.integers(5, 60))
        good = rng.random() < 0.6
        logits = rng.normal(0, 0.3, size=(length, 8)).astype(np.float32)
        targets = rng.integers(0, 8, size=length)
        boost = (2.6, 3.6) if good else (1.6, 2.6)
        logits[np.arange(length), targets] += rng.uniform(*boost, size=length)
        if by_sequence:
            z = logits / 0.3
            lp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            good = rng.random() < float(np.exp(lp[np.arange(length), targets].sum()))
        scored.append(ScoredAnswer(logits, targets.astype(np.int64)))
        verdicts.append(float(good if by_sequence or rng.random() < 0.95 else not good))
    examples = [Example(answer="a reference", prompt=f"input {i}") for i in range(n)]
    answers = [StudentAnswer("text", (1,), (-0.1,), "stop") for _ in range(n)]
    return ScoredSet(examples, answers, scored, scored, [[1]] * n, verdicts=np.array(verdicts))


def test_a_judged_task_gets_the_logistic_text_calibrator_and_it_round_trips(
    tmp_path: Path,
) -> None:
    student = fake_student(tmp_path / "s")
    scored = judged_set()
    calibration, held = fit_calibration(scored, student, goal=RoutingGoal(0.9, None, 0.05))
    after = calibration.metrics_after
    assert calibration.feature == "text" and calibration.method == "logistic"
    assert calibration.temperature == 1.0 and calibration.logistic is not None
    assert after["nll_text"] < after["nll_sequence"]
    assert after["ece"] < 0.06 < calibration.metrics_before["ece"]
    assert calibration.certified and after["accepted_accuracy"] >= 0.9
    assert 0.15 < after["coverage"] < 0.6
    save_calibration(calibration, tmp_path / "c.json")
    loaded = load_calibration(tmp_path / "c.json", student_dir=student)
    assert loaded == calibration and len(held.examples) == 400


def test_where_the_sequence_probability_is_the_truth_the_temperature_wins_by_held_out_nll(
    tmp_path: Path,
) -> None:
    calibration, _ = fit_calibration(
        judged_set(2000, by_sequence=True),
        fake_student(tmp_path / "s"),
        goal=RoutingGoal(0.9, None, 0.05),
    )
    after = calibration.metrics_after
    assert calibration.feature == "sequence" and calibration.logistic is None
    assert after["nll_sequence"] < after["nll_text"] and 0.2 < calibration.temperature < 0.45


def test_without_verdicts_the_temperature_is_fitted_as_before(tmp_path: Path) -> None:
    scored = judged_set()
    exact = ScoredSet(
        scored.examples,
        [
            StudentAnswer("a reference" if v else "no", (1,), (-0.1,), "stop")
            for v in scored.verdicts
        ],  # type: ignore[union-attr]
        scored.references,
        scored.greedy,
        scored.prompt_ids,
    )
    calibration, _ = fit_calibration(
        exact, fake_student(tmp_path / "s"), goal=RoutingGoal(0.9, None, 0.05)
    )
    assert calibration.feature == "sequence" and calibration.logistic is None
    assert "nll_text" not in calibration.metrics_after
