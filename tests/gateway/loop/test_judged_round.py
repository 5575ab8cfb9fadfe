"""A round on a free-text task (E2E, the tiny shape through the command trainer, the
program judge): the candidate is calibrated and gated on the judge's verdicts, each
answer judged once across rounds, and a round whose judge budget is too small rejects its
candidate as not judged."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from calibration import load_calibration
from gateway.examples import read_examples, write_examples
from gateway.judges import ProgramJudge
from gateway.judges.e2e import judge
from gateway.judges.verdicts import VerdictFile, Verdicts
from gateway.loop.registry import Registry
from gateway.loop.round import judge as gate
from gateway.loop.round import run_round
from gateway.loop.trainers import trainer_for
from gateway.tasks import CapturePolicy, JudgeConfig, LoopPolicy, RoutingPolicy, Task
from tests.conftest import ROOT
from tests.gateway.loop.helpers import captured

E2E = ROOT / "data" / "e2e"
TRAINER = (
    f"{sys.executable} {ROOT / 'tests' / 'loop_trainer.py'} --train {{train}} "
    "--held-out {held_out} --out {out} --answers {answers} --parent {parent}"
)


class Counting(ProgramJudge):
    def __init__(self) -> None:
        super().__init__(judge, name="gateway.judges.e2e:judge")
        self.calls = 0

    async def judge(self, request):  # type: ignore[no-untyped-def]
        self.calls += 1
        return await super().judge(request)


def e2e_task(tmp: Path, max_calls: int = 5000) -> Task:
    gate = tmp / "gate.jsonl"
    write_examples(gate, read_examples(E2E / "test.jsonl")[:40])
    return Task(
        name="e2e",
        student=tmp / "none",
        routing=RoutingPolicy(target_accuracy=0.8, delta=0.1),
        capture=CapturePolicy(holdout_share=0.4),
        judge=JudgeConfig(
            rubric="every attribute realised, none added",
            function="gateway.judges.e2e:judge",
            max_calls_per_round=max_calls,
        ),
        loop=LoopPolicy(registry=tmp / "registry", min_pairs=50, trainer=TRAINER, eval_data=gate),
    )


def teacher_pairs(n: int) -> list:  # type: ignore[type-arg]
    rows = read_examples(E2E / "calibration.jsonl")[:n]
    return [captured(e.prompt or "", e.answer) for e in rows]


def test_a_free_text_round_is_calibrated_and_gated_on_verdicts(tmp_path: Path) -> None:
    task = e2e_task(tmp_path)
    registry = Registry(tmp_path / "registry", "e2e")
    counting = Counting()
    records = teacher_pairs(200)
    report = asyncio.run(
        run_round(task, registry, records, trainer_for(task), trigger="t", judge_with=counting)
    )
    assert report.outcome in {"promoted", "rejected"}, report.reason
    assert report.gate["n"] == report.data["evaluate_with_labelled"] > 40  # frozen set + held out
    # Calibration judged the candidate's answers to its calibration part; the gate those it
    # would keep: every call counted, each distinct answer once, all kept on disk.
    assert report.judge["asked"] == counting.calls > 0 and report.judge["failures"] == 0
    kept = (registry.dir / "verdicts.jsonl").read_text().splitlines()
    assert len(kept) == counting.calls
    assert all(isinstance(json.loads(line)[1], bool) for line in kept)
    # The gate on v0001 again, as the next round judges the serving student: every verdict
    # is known from the registry, no judge call is made, and the outcomes are the same.
    frozen = read_examples(tmp_path / "gate.jsonl")
    calibration = load_calibration(registry.calibrator("v0001"))
    store = VerdictFile(registry.dir / "verdicts.jsonl")
    verdicts = Verdicts(counting, task.judge.rubric, store=store)  # type: ignore[union-attr]
    first = asyncio.run(gate(registry.student_dir("v0001"), calibration, task, frozen, verdicts))
    again = Verdicts(counting, task.judge.rubric, store=store)  # type: ignore[union-attr]
    second = asyncio.run(gate(registry.student_dir("v0001"), calibration, task, frozen, again))
    assert again.asked == 0 and first == second
    assert len(first) == len(frozen)


def test_a_round_past_its_judge_budget_rejects_its_candidate_as_not_judged(
    tmp_path: Path,
) -> None:
    task = e2e_task(tmp_path, max_calls=3)
    registry = Registry(tmp_path / "registry", "e2e")
    report = asyncio.run(
        run_round(
            task,
            registry,
            teacher_pairs(200),
            trainer_for(task),
            trigger="t",
            judge_with=Counting(),
        )
    )
    assert report.outcome in {"failed", "rejected"} and "judge calls" in report.reason
    assert registry.serving() is None
    (version,) = registry.versions()
    assert version.state == "rejected"
