"""Continuing a student (the loop's rounds after the first) never keeps a result worse on
the held-out set than the student it started from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.training.trainer import train_student
from tests.conftest import TINY, TinyStudent


def test_a_continuation_that_only_gets_worse_keeps_the_student_it_started_from(
    tmp_path: Path, tiny_student: TinyStudent
) -> None:
    parent = train_student(  # zero more steps: what the parent scores on the held-out set
        tiny_student.train,
        tiny_student.test,
        tmp_path / "same",
        dataclasses.replace(TINY, max_steps=1, lr=0.0),
        init_from=tiny_student.path,
    )
    wrecked = dataclasses.replace(TINY, max_steps=20, lr=5.0, warmup_fraction=0.0)  # destroys it
    result = train_student(
        tiny_student.train,
        tiny_student.test,
        tmp_path / "out",
        wrecked,
        init_from=tiny_student.path,
    )
    assert parent.best_eval_accuracy > 0.5
    assert result.best_eval_accuracy == parent.best_eval_accuracy
