"""`evaluate` on a free-text task: right means the judge accepts it; each distinct answer is
judged once; a judge that fails never accepts and is counted; BLEU, chrF and the slot error
rate come beside the routing figures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from calibration import Calibration
from gateway.api.protocol import chat_request
from gateway.examples import Example
from gateway.jobs.evaluate import evaluate
from gateway.judges import JudgeRequest, ProgramJudge, Verdict
from gateway.pipeline.deployment import TaskRuntime
from gateway.simulator import SimulatedAnswers, SimulatedTeacher
from gateway.tasks import GenerationLimits, JudgeConfig, Task
from gateway.testing import FakeEngine

E2E = "gateway.judges.e2e:judge"
EXAMPLES = [
    Example(
        "Aromi is a pub near Café Brazil.",
        prompt="name[Aromi], eatType[pub], near[Café Brazil]",
        references=("Aromi is a pub near Café Brazil.", "Near Café Brazil is Aromi, a pub."),
    ),
    Example(
        "Cotto is a cheap coffee shop.",
        prompt="name[Cotto], eatType[coffee shop], priceRange[cheap]",
        references=("Cotto is a cheap coffee shop.",),
    ),
    Example(
        "The Mill serves Chinese food by the river.",
        prompt="name[The Mill], food[Chinese], area[riverside]",
        references=("The Mill serves Chinese food by the river.",),
    ),
]
# The student: right and sure on the first, wrong and sure on the second (it adds a food),
# unsure on the third (escalated: the teacher's reference is served).
STUDENT = {
    EXAMPLES[0].prompt: ("Aromi is a pub near Café Brazil.", 0.999),
    EXAMPLES[1].prompt: ("Cotto is a cheap Chinese coffee shop.", 0.999),
    EXAMPLES[2].prompt: ("The Mill is by the river.", 0.5),
}


class Counting(ProgramJudge):
    def __init__(self, fail: bool = False) -> None:
        super().__init__(ProgramJudge.from_path(E2E).function, name="counting")
        self.fail, self.asked = fail, 0

    async def judge(self, request: JudgeRequest) -> Verdict:
        self.asked += 1
        if self.fail:
            raise TimeoutError("the judge did not answer")
        return await super().judge(request)


def run(judge: Counting) -> dict[str, Any]:
    task = Task(
        name="e2e",
        student=Path("s"),
        generation=GenerationLimits(max_tokens=48),
        judge=JudgeConfig(rubric="every attribute realised, nothing added", function=E2E),
    )
    calibration = Calibration(temperature=1.0, threshold=0.9, student_fingerprint="x")
    teacher = SimulatedTeacher(SimulatedAnswers.from_examples(EXAMPLES))
    runtime = TaskRuntime(task, FakeEngine(STUDENT), calibration, teacher)
    result = asyncio.run(evaluate(runtime, EXAMPLES, client_request=chat_request, judge=judge))
    return result.report


def test_a_free_text_task_is_scored_by_its_judge_with_bleu_chrf_and_slot_errors() -> None:
    judge = Counting()
    r = run(judge)
    assert r["student_accuracy"] == 1 / 3  # only the first of the student's texts
    assert r["teacher_accuracy"] == 1.0 and r["escalation_rate"] == 1 / 3
    assert r["routed_accuracy"] == 2 / 3  # the sure but wrong second one was kept
    assert r["judge"] == {"judged_by": "counting", "answers_judged": 5, "failures": 0}
    assert judge.asked == 5  # 3 student texts + 3 teacher texts, one shared: judged once
    scores = r["text_scores"]
    assert scores["teacher"]["bleu"] > 99 and scores["student"]["bleu"] < scores["routed"]["bleu"]
    assert 0 < scores["student"]["chrf"] < 100
    ser = r["slot_error_rate"]
    assert ser["teacher"] == 0 and ser["student"] == 2 / 9  # an added food, a missing one


def test_a_judge_that_fails_accepts_nothing_and_is_counted() -> None:
    r = run(Counting(fail=True))
    assert r["student_accuracy"] == r["teacher_accuracy"] == r["routed_accuracy"] == 0
    assert r["judge"]["failures"] == r["judge"]["answers_judged"] == 5
