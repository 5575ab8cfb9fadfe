"""The ``distillgate`` command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


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
    assert report["n"] == 60 and 0.0 <= report["exact_match"] <= 1.0


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
