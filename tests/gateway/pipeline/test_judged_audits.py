"""A free-text task's audits and shadow answers are judged: the verdict (not exact
agreement with the teacher's text) is the audit's outcome and is captured with the record;
a judge that fails gives no verdict, is counted, and is no evidence either way."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from calibration import Calibration
from gateway.budgets import TeacherBudgets, budgets_of
from gateway.capture import CaptureRecord, CaptureRecorder, Spool
from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.judges import JudgeRequest, ProgramJudge, Verdict
from gateway.loop.watch import watch_serving
from gateway.pipeline.answer import Pipeline
from gateway.pipeline.audit import AuditTracker
from gateway.pipeline.decision import Route
from gateway.pipeline.deployment import TaskRuntime
from gateway.tasks import CapturePolicy, JudgeConfig, LoopPolicy, Prices, Task, TeacherConfig
from gateway.testing import FakeEngine, FakeTeacher, MemorySink
from tests.gateway.loop.helpers import captured
from tests.gateway.pipeline.test_answer import Observed

PROMPT = "name[Aromi], eatType[pub]"
STUDENT = "Aromi is a pub."  # three pieces at 0.99: accepted at 0.9


def names_aromi(prompt: str, answer: str) -> Verdict:
    return Verdict("Aromi" in answer, "the name is there" if "Aromi" in answer else "no name")


def breaks(prompt: str, answer: str) -> Verdict:
    raise TimeoutError("the judge model did not answer")


def judged_task(tmp: Path, function: str) -> Task:
    return Task(
        name="t",
        student=tmp / "s",
        capture=CapturePolicy(audit_rate=1.0),
        judge=JudgeConfig(rubric="names the venue", function=function),
        loop=LoopPolicy(registry=tmp / "registry"),
    )


def audit_once(tmp: Path, judge: ProgramJudge, teacher_text: str) -> tuple[Observed, MemorySink]:
    task = judged_task(tmp, f"{__name__}:{judge.function.__name__}")
    engine = FakeEngine({PROMPT: (STUDENT, 0.99)})
    calibration = Calibration(temperature=1.0, threshold=0.9, student_fingerprint="x")
    runtime = TaskRuntime(task, engine, calibration, FakeTeacher(teacher_text), judge=judge)
    sink, observed = MemorySink(), Observed()
    recorder = CaptureRecorder(sink, Spool(tmp / "spool"))

    async def go() -> None:
        await recorder.start()
        pipeline = Pipeline(
            {"t": runtime}, recorder=recorder, audits=AuditTracker(seed=0), observer=observed
        )
        gen = GenerationRequest("r", SamplingParams(max_tokens=24), (Message("user", PROMPT),))
        answer = await pipeline.answer(runtime, gen)
        assert answer.route == Route.STUDENT
        await pipeline.aclose()
        await recorder.aclose()

    asyncio.run(go())
    return observed, sink


def test_an_audit_of_free_text_is_the_judges_verdict_and_is_captured(tmp_path: Path) -> None:
    # The teacher words it otherwise: exact agreement would say "disagree".
    observed, sink = audit_once(tmp_path, ProgramJudge(names_aromi), "The Aromi is a pub.")
    (record,) = sink.records.values()
    assert record.route == "audit" and record.verdict is True
    assert record.verdict_reason == "the name is there"
    assert ("audited", "static", True) in observed.events
    assert ("judged", "accepted", 0.0) in observed.events


def test_a_judge_that_fails_gives_no_verdict_and_is_counted(tmp_path: Path) -> None:
    observed, sink = audit_once(tmp_path, ProgramJudge(breaks), STUDENT)
    (record,) = sink.records.values()
    assert record.verdict is None and record.teacher_answer == STUDENT  # still a label
    assert ("judged", "failed", 0.0) in observed.events
    assert not [e for e in observed.events if e[0] == "audited"]  # no evidence either way


def test_the_rollback_watch_reads_verdicts_on_a_judged_task(tmp_path: Path) -> None:
    task = judged_task(tmp_path, f"{__name__}:names_aromi")

    def audit(i: int, verdict: bool | None) -> CaptureRecord:
        r = captured(PROMPT, f"teacher text {i}", route="audit", student=STUDENT, version="v1")
        return dataclasses.replace(r, verdict=verdict)

    # The teacher never words it the same; the judge accepts all but one; it failed on one.
    records = [audit(i, i != 7) for i in range(200)] + [audit(200, None)]
    watch = watch_serving(task, "v1", records, target=0.95)
    assert watch.audits == 200 and watch.agreement == 199 / 200
    assert watch.verdict != "fell"
    rejected = [audit(i, False) for i in range(200)]
    assert watch_serving(task, "v1", rejected, target=0.95).verdict == "fell"


class PricedJudge:
    """A judge model's stand-in: every verdict costs ``usd``."""

    name = "priced"

    def __init__(self, usd: float) -> None:
        self.usd, self.calls = usd, 0

    async def judge(self, request: JudgeRequest) -> Verdict:
        self.calls += 1
        return Verdict(True, "fine", cost_usd=self.usd)

    async def aclose(self) -> None:
        return None


def test_a_judge_models_calls_are_held_against_the_teacher_budget(tmp_path: Path) -> None:
    """The teacher's audits are free here; the judge's verdicts cost $0.004 each against a
    $0.01 daily budget that audits may spend to 90 %: three are judged (the third admitted
    at $0.008), then the budget stops the audits. Its spend is the judge's."""
    task = Task(
        name="t",
        student=tmp_path / "s",
        capture=CapturePolicy(audit_rate=1.0),
        teacher=TeacherConfig(usd_per_day=0.01),
        prices=Prices(teacher_input=0.0, teacher_output=0.0),
        judge=JudgeConfig(rubric="names the venue", provider="openai"),  # a judge model
    )
    judge = PricedJudge(0.004)
    engine = FakeEngine({PROMPT: (STUDENT, 0.99)})
    calibration = Calibration(temperature=1.0, threshold=0.9, student_fingerprint="x")
    runtime = TaskRuntime(task, engine, calibration, FakeTeacher(STUDENT), judge=judge)
    budgets, sink = TeacherBudgets(), MemorySink()

    async def go() -> float:
        recorder = CaptureRecorder(sink, Spool(tmp_path / "spool"))
        await recorder.start()
        pipeline = Pipeline(
            {"t": runtime}, recorder=recorder, audits=AuditTracker(seed=0), budgets=budgets
        )
        for i in range(6):
            gen = GenerationRequest(
                f"r{i}", SamplingParams(max_tokens=24), (Message("user", PROMPT),)
            )
            await pipeline.answer(runtime, gen)
            await asyncio.sleep(0.05)  # the audit (teacher, then judge) runs in the background
        await pipeline.aclose()
        await recorder.aclose()
        (figures,) = await budgets.figures(budgets_of(task, None))
        return figures.spent_usd

    spent = asyncio.run(go())
    assert judge.calls == 3 and abs(spent - 3 * 0.004) < 1e-12, (judge.calls, spent)
    assert [r.verdict for r in sink.records.values()] == [True, True, True]
