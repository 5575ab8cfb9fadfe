"""The ``distillgate`` command, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.engines.transformers import TransformersEngine
from gateway.examples import read_examples
from gateway.jobs.replay import replay
from gateway.tasks import PromptFormat
from tests.conftest import cli


def test_import_train_and_evaluate(tmp_path: Path) -> None:
    rows = ["text,category"] + [f"where is card number {i},card_arrival" for i in range(30)]
    rows += [f"what rate for euro {i},Exchange_rate" for i in range(30)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    done = cli("data", "import-csv", "d.csv", "--out", "d.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 60

    done = cli(
        "student",
        "train",
        "--data",
        "d.jsonl",
        "--out",
        "s",
        "--max-steps",
        "5",
        "--threads",
        "1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s" / "model.safetensors").is_file()
    card = json.loads((tmp_path / "s" / "distillgate_student.json").read_text())
    assert card["steps"] == 5

    done = cli("student", "evaluate", "--student", "s", "--data", "d.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # the same student's greedy answers, replayed here, give the same exact match
    examples = read_examples(tmp_path / "d.jsonl")

    async def replayed() -> list[str]:
        engine = TransformersEngine(tmp_path / "s")
        await engine.start()
        try:
            answers = await replay(engine, examples, max_tokens=32, prompt=PromptFormat())
        finally:
            await engine.aclose()
        return [a.text for a in answers]

    texts = asyncio.run(replayed())
    right = sum(t == e.answer for t, e in zip(texts, examples, strict=True))
    assert report["n"] == 60 and report["exact_match"] == pytest.approx(right / 60)


def test_bad_data_fails_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    done = cli("student", "train", "--data", "bad.jsonl", "--out", "s", cwd=tmp_path)
    assert done.returncode != 0
    assert "bad.jsonl:1" in done.stderr and "Traceback" not in done.stderr


def test_serve_refuses_a_broken_task_file(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text('student = "x"\n[generation]\nmax_tokens = "many"\n')
    done = cli("serve", "--tasks-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode != 0
    assert "t.toml" in done.stderr and "generation.max_tokens" in done.stderr


def test_calibrate_and_evaluate_a_student(tiny_student, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from calibration import load_calibration
    from gateway.examples import write_examples
    from tests.conftest import DATA, subset

    # held out of the tiny student's training: examples 60.. of each label
    held = [e for e in subset(DATA / "train.jsonl", 90) if e not in tiny_student.train]
    write_examples(tmp_path / "cal.jsonl", held)
    write_examples(tmp_path / "test.jsonl", tiny_student.test)
    out = tmp_path / "tiny.calibration.json"
    done = cli(
        "calibrate", "--student", str(tiny_student.path), "--data", "cal.jsonl",
        "--max-escalation", "0.3", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "temperature" in done.stdout and "ece" in done.stdout
    calibration = load_calibration(out, student_dir=tiny_student.path)
    assert calibration.n_temperature + calibration.n_threshold == len(held)
    assert calibration.max_escalation == 0.3 and 0.05 <= calibration.temperature <= 20
    assert (tmp_path / "tiny.calibration.reliability.png").stat().st_size > 10_000
    assert (tmp_path / "tiny.calibration.risk_coverage.png").is_file()

    done = cli(
        "evaluate", "--student", str(tiny_student.path), "--calibrator", str(out),
        "--data", "test.jsonl", "--out", "report.json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    fractions = [
        *("student_accuracy", "teacher_accuracy", "routed_accuracy", "escalation_rate"),
        *("ece_before", "ece_after", "aurc"),
    ]
    assert all(0.0 <= report[k] <= 1.0 for k in fractions)
    # Routing metrics divide by the gap the teacher can recover: none when there is none
    # (a tiny student trained against the clock can score every test example).
    gap = report["teacher_accuracy"] > report["student_accuracy"]
    for k in ("apgr", "cpt50", "cpt80"):
        assert (0.0 <= report[k] <= 1.0) if gap else report[k] is None
    assert report["teacher_accuracy"] == 1.0 and report["n"] == len(tiny_student.test)
    assert report["routed_accuracy"] >= report["student_accuracy"]
    assert report["cost_per_1k_routed"] <= report["cost_per_1k_teacher"]
    assert (tmp_path / "report.png").is_file()
