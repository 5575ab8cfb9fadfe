from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.tasks import TaskConfigError, load_tasks

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_task_loads_with_paths_resolved() -> None:
    task = load_tasks(ROOT / "tasks")["banking77"]
    assert task.student == (ROOT / "models" / "banking77").resolve()
    assert task.answer_set is not None and len(task.answer_set) == 77
    assert task.build is not None and task.build.train.is_file()
    assert task.generation.temperature == 0.0


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "t.toml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("description = 'no student'\n", "student: Field required"),
        ('student = "s"\ncolour = "red"\n', "colour: Extra inputs are not permitted"),
        ('student = "s"\n[generation]\nmax_tokens = 0\n', "generation.max_tokens"),
        ('student = "s"\n[prompt]\ninput = "everything"\n', "prompt.input"),
        ('student = "s"\n[prompt]\nplaceholders = { X = "name" }\n', "one capture group"),
        ('student = "s"\n[prompt]\nplaceholders = { X = "(a" }\n', "placeholder 'X'"),
        ('student = "s"\nanswers = []\n', "answers"),
        (
            'student = "s"\nanswers = ["a"]\nanswers_file = "a.json"\n',
            "either answers or answers_file",
        ),
        ('student = "s"\nanswers_file = "missing.json"\n', "answers_file"),
        ("student = \n", "cannot read task file"),
        ('student = "s"\n[engine]\nkind = "tpu"\n', "engine"),
        ('student = "s"\n[engine]\nkind = "remote"\n', "engine.remote.base_url: Field required"),
        ('student = "s"\n[engine]\nkind = "remote"\nbase_url = "nope"\n', "base_url"),
        (
            'student = "s"\n[engine]\nkind = "remote"\nbase_url = "http://f/v1"\n'
            "confidence_top_k = 50\n",
            "confidence_top_k",
        ),
    ],
)
def test_bad_task_files_name_the_file_and_field(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(TaskConfigError, match=problem) as info:
        load_tasks(write(tmp_path, text))
    assert "t.toml" in str(info.value)


def test_answers_file_must_hold_strings(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([1, 2]))
    with pytest.raises(TaskConfigError, match="JSON list of strings"):
        load_tasks(write(tmp_path, 'student = "s"\nanswers_file = "a.json"\n'))


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match="no task files"):
        load_tasks(tmp_path)
