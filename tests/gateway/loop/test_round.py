"""Rounds with real training (the tiny shape, through the command trainer): a good round
promotes, a poisoned one is rejected by the gate, a crashing or broken trainer fails the
round, and none of the failures touches what serves."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from gateway.examples import write_examples
from gateway.loop.registry import Registry
from gateway.loop.round import run_round
from gateway.loop.trainers import trainer_for
from gateway.simulator import SimulatedAnswers
from gateway.tasks import CapturePolicy, LoopPolicy, RoutingPolicy, Task
from tests.conftest import DATA, LABELS, ROOT
from tests.gateway.loop.helpers import captured
from tests.test_loop import per_label

TRAINER = (
    f"{sys.executable} {ROOT / 'tests' / 'loop_trainer.py'} --train {{train}} "
    "--held-out {held_out} --out {out} --answers {answers} --parent {parent}"
)


def make_task(tmp_path: Path, trainer: str = TRAINER) -> Task:
    gate = tmp_path / "gate.jsonl"
    write_examples(gate, per_label(DATA / "test.jsonl", LABELS, 0, 40))
    return Task(
        name="banking77",
        student=tmp_path / "none",
        answers=LABELS,
        routing=RoutingPolicy(target_accuracy=0.85, delta=0.1),
        capture=CapturePolicy(holdout_share=0.4),
        loop=LoopPolicy(
            registry=tmp_path / "registry", min_pairs=50, trainer=trainer, eval_data=gate
        ),
    )


def teacher_right(start: int, stop: int) -> list:  # type: ignore[type-arg]
    rows = per_label(DATA / "train.jsonl", LABELS, start, stop)
    return [captured(e.prompt or "", e.answer) for e in rows]


def round_of(task: Task, records: list) -> object:  # type: ignore[type-arg]
    assert task.loop is not None
    registry = Registry(task.loop.registry, task.name)
    return asyncio.run(run_round(task, registry, records, trainer_for(task), trigger="test"))


def test_a_poisoned_round_is_rejected_and_changes_nothing(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    registry = Registry(tmp_path / "registry", "banking77")
    clean = per_label(DATA / "train.jsonl", LABELS, 0, 70)
    good = round_of(task, [captured(e.prompt or "", e.answer) for e in clean])
    assert good.outcome == "promoted", good.reason  # type: ignore[attr-defined]
    serving = registry.serving()
    assert serving is not None and serving.version == "v0001"
    # The next round's data: the simulator teacher at 30 % accuracy, on new prompts.
    more = per_label(DATA / "train.jsonl", LABELS, 70, 140)
    sim = SimulatedAnswers.from_examples(more, accuracy=0.3)
    sim.answer_set = LABELS
    poisoned = [captured(e.prompt or "", sim.answer(e.prompt or "")) for e in more]
    assert sum(r.teacher_answer != e.answer for r, e in zip(poisoned, more, strict=True)) > 100
    bad = round_of(task, [captured(e.prompt or "", e.answer) for e in clean] + poisoned)
    assert bad.outcome == "rejected", bad.reason  # type: ignore[attr-defined]
    assert registry.serving() == serving  # nothing switched
    assert registry.version("v0002").state == "rejected"
    assert registry.version("v0002").gate["promote"] is False
    rounds = registry.rounds()
    assert [r["outcome"] for r in rounds] == ["promoted", "rejected"]
    assert rounds[1]["gate"]["test"].startswith("Clopper-Pearson")


@pytest.mark.parametrize(
    ("trainer", "why"),
    [
        (f"{TRAINER} --fail", "exited with status 3"),
        (f"{sys.executable} -c pass", "no model folder"),
    ],
)
def test_a_crashing_or_broken_trainer_fails_the_round(
    tmp_path: Path, trainer: str, why: str
) -> None:
    task = make_task(tmp_path, trainer)
    records = [
        captured(e.prompt or "", e.answer) for e in per_label(DATA / "train.jsonl", LABELS, 0, 40)
    ]
    report = round_of(task, records)
    assert report.outcome == "failed" and why in report.reason  # type: ignore[attr-defined]
    registry = Registry(tmp_path / "registry", "banking77")
    assert registry.serving() is None
    (version,) = registry.versions()  # the candidate, rejected with the reason
    assert version.state == "rejected" and version.transitions[-1].event == "build_failed"
    assert why in version.reason
    assert not registry.student_dir(version.name).exists()  # nothing half-made is left


def test_a_trainer_that_hangs_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    task = make_task(tmp_path, f"{sys.executable} -c 'import time; time.sleep(60)'")
    assert task.loop is not None
    task = task.model_copy(update={"loop": task.loop.model_copy(update={"train_timeout_s": 1.0})})
    records = [
        captured(e.prompt or "", e.answer) for e in per_label(DATA / "train.jsonl", LABELS, 0, 40)
    ]
    report = round_of(task, records)
    assert report.outcome == "failed" and "ran past 1 s" in report.reason  # type: ignore[attr-defined]


def test_a_round_fine_tunes_a_pretrained_base_when_the_recipe_names_one(
    tiny_student, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """[build] base + method: the builtin trainer trains a LoRA adapter on that base, and
    the adapter is calibrated, gated and promoted like any candidate; the next round
    continues the serving adapter."""
    from gateway.engines.student_folder import open_student
    from gateway.tasks import BuildRecipe

    seed = tmp_path / "seed.jsonl"
    write_examples(seed, per_label(DATA / "train.jsonl", LABELS, 0, 20))
    task = make_task(tmp_path, trainer="builtin")
    assert task.loop is not None
    task = task.model_copy(
        update={
            "build": BuildRecipe(
                train=seed, base=tiny_student.path, method="lora", lora_rank=8, lr=3e-3
            ),
            "loop": task.loop.model_copy(
                update={"train_max_steps": 15, "train_threads": 2, "train_nice": 0}
            ),
        }
    )
    registry = Registry(tmp_path / "registry", "banking77")
    first = round_of(task, teacher_right(20, 90))
    assert first.outcome == "promoted", first.reason  # type: ignore[attr-defined]
    student = open_student(registry.student_dir(first.candidate))  # type: ignore[attr-defined]
    assert student.is_adapter and student.base == tiny_student.path.resolve()

    second = round_of(task, teacher_right(20, 90) + teacher_right(90, 130))
    assert second.parent == first.candidate  # type: ignore[attr-defined]
    assert second.outcome in {"promoted", "rejected"}, second.reason  # type: ignore[attr-defined]
    assert open_student(registry.student_dir(second.candidate)).is_adapter  # type: ignore[attr-defined]
