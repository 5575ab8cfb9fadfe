"""``distillgate evaluate``: replay a labelled set through the gateway's own routing code.

No HTTP: ``Pipeline.answer`` is called directly, so the student, the calibrated
confidence and the accept/escalate rule are exactly those that serve traffic. The
teacher is asked about every example too (for the routing curve); by default it is the
simulator answering the reference answers, a real one when the task configures its key.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from calibration import (
    apgr_score,
    aurc_loss,
    cpt,
    expected_calibration_error,
    routing_curve,
)
from gateway.engines.base import GenerationRequest
from gateway.errors import GatewayError
from gateway.examples import Example
from gateway.jobs.fields import field_scores
from gateway.jobs.judged import slot_error_rate, text_scores
from gateway.judges import Judge, load_function
from gateway.judges.verdicts import Verdicts
from gateway.pipeline.answer import Pipeline
from gateway.pipeline.base import Answer
from gateway.pipeline.decision import Route, routing_goal
from gateway.pipeline.deployment import TaskRuntime
from gateway.pipeline.escalation import teacher_request
from gateway.pipeline.reply import ReplyOptions
from gateway.tasks import Prices, Task
from gateway.teachers.base import TeacherAnswer

__all__ = ["ClientRequest", "Evaluation", "evaluate"]


class ClientRequest(Protocol):
    """Converts a client's request body as serving does (``api.protocol.chat_request``)."""

    def __call__(
        self, task: Task, wire: dict[str, Any], request_id: str
    ) -> tuple[GenerationRequest, ReplyOptions]: ...


@dataclass(frozen=True)
class Evaluation:
    report: dict[str, Any]
    curve_share: list[float]
    curve_accuracy: list[float]


def _cost(prices: Prices, teacher: TeacherAnswer | None, answer: Answer | None) -> float:
    total = 0.0
    if teacher is not None:
        total += (
            teacher.input_tokens * prices.teacher_input
            + teacher.output_tokens * prices.teacher_output
        ) / 1e6
    if answer is not None:
        out_tokens = len(answer.deltas)
        total += (
            answer.deltas[-1].prompt_tokens * prices.student_input
            + out_tokens * prices.student_output
        ) / 1e6
    return total


async def evaluate(
    runtime: TaskRuntime,
    examples: Sequence[Example],
    *,
    client_request: ClientRequest,
    max_tokens: int | None = None,
    concurrency: int = 64,
    judge: Judge | None = None,
) -> Evaluation:
    """``max_tokens``: replay as if every client sent it (the routing decision must not
    change: it is made on the student's whole answer, and only the served text is cut).
    ``concurrency``: requests in flight at once, like that many clients, so each meets the
    task's deadline on its own time rather than behind thousands queued at once; at most
    the engine's batch, or the rest wait in its queue on the deadline's time.

    Long because the report's twenty figures are computed and named in one place.
    """
    if runtime.teacher is None:
        raise ValueError(f"task {runtime.task.name!r} has no teacher to route to")
    pipeline = Pipeline({runtime.task.name: runtime})
    task = runtime.task

    clients = asyncio.Semaphore(concurrency)

    async def one(i: int) -> tuple[Answer, TeacherAnswer] | GatewayError:
        """A request that fails (the task's deadline on a loaded machine, a teacher error)
        is counted in the report, never the end of the job: no client is waiting."""
        async with clients:
            try:
                return await ask(i)
            except GatewayError as exc:
                return exc

    async def ask(i: int) -> tuple[Answer, TeacherAnswer]:
        # The request a client would send, converted exactly as serving converts it.
        wire: dict[str, Any] = {"model": task.name, "messages": examples[i].chat()}
        if max_tokens is not None:
            wire["max_tokens"] = max_tokens
        gen, options = client_request(task, wire, f"eval-{i}")
        answer = await pipeline.answer(runtime, gen, options=options)
        assert runtime.teacher is not None
        teacher = await runtime.teacher.complete(teacher_request(task, gen))
        return answer, teacher

    outcomes = await asyncio.gather(*(one(i) for i in range(len(examples))))
    failed = Counter(o.code or type(o).__name__ for o in outcomes if isinstance(o, GatewayError))
    kept = [(o, ex) for o, ex in zip(outcomes, examples, strict=True) if isinstance(o, tuple)]
    if not kept:
        raise ValueError(f"no example was answered ({dict(failed)})")
    results = [o for o, _ in kept]
    gold = [ex.answer for _, ex in kept]
    answers = [a for a, _ in results]
    teachers = [t for _, t in results]
    verdicts = None
    if judge is not None and task.judge is not None:  # free text: right = the judge accepts
        verdicts = Verdicts(judge, task.judge.rubric)
        inputs = [ex.chat()[-1]["content"] for _, ex in kept]

        async def accepted_of(texts: list[str]) -> NDArray[np.float64]:
            assert verdicts is not None
            ok = await verdicts.acceptable(list(zip(inputs, texts, strict=True)))
            return np.array(ok, dtype=float)

        student_ok = await accepted_of([a.student_text for a in answers])
        teacher_ok = await accepted_of([t.text for t in teachers])
        routed_ok = await accepted_of([a.text for a in answers])
    else:
        same = task.answer_check.same
        student_ok = np.array(
            [same(a.student_text, g) for a, g in zip(answers, gold, strict=True)], dtype=float
        )
        teacher_ok = np.array(
            [same(t.text, g) for t, g in zip(teachers, gold, strict=True)], dtype=float
        )
        routed_ok = np.array(
            [same(a.text, g) for a, g in zip(answers, gold, strict=True)], dtype=float
        )
    escalated = np.array([a.route != Route.STUDENT for a in answers])
    conf = np.array([a.confidence for a in answers])
    raw = np.array([a.raw_confidence for a in answers])
    curve = routing_curve(student_ok, teacher_ok, conf)
    gap = curve.teacher_accuracy > curve.student_accuracy
    teacher_cost = np.mean([_cost(task.prices, t, None) for t in teachers])
    routed_cost = np.mean(
        [
            _cost(task.prices, t if e else None, a)
            for a, t, e in zip(answers, teachers, escalated, strict=True)
        ]
    )
    accepted = ~escalated
    report: dict[str, Any] = {
        "task": task.name,
        "n": len(results),  # the figures' examples: those answered
        "failed": dict(failed),  # the others, by error code
        "student_accuracy": float(student_ok.mean()),
        "teacher_accuracy": float(teacher_ok.mean()),
        "routed_accuracy": float(routed_ok.mean()),
        "escalation_rate": float(escalated.mean()),
        "accepted_accuracy": float(routed_ok[accepted].mean()) if accepted.any() else None,
        "ece_before": expected_calibration_error(student_ok, raw),
        "ece_after": expected_calibration_error(student_ok, conf),
        "aurc": aurc_loss(student_ok, conf),
        # PGR needs a gap to recover: null when the student already matches the teacher
        "apgr": apgr_score(curve) if gap else None,
        "cpt50": cpt(curve, 0.5) if gap else None,
        "cpt80": cpt(curve, 0.8) if gap else None,
        "cost_per_1k_teacher": float(teacher_cost * 1000),
        "cost_per_1k_routed": float(routed_cost * 1000),
        "temperature": runtime.calibration.temperature if runtime.calibration else None,
        "threshold": runtime.calibration.threshold if runtime.calibration else None,
        "target_accuracy": runtime.calibration.target_accuracy if runtime.calibration else None,
        "goal": str(routing_goal(task.routing)),  # what the task asks; the calibrator's above
        "teacher": runtime.teacher_label or runtime.teacher.name,
        "client_max_tokens": max_tokens,
    }
    if verdicts is not None:  # the accuracies above are the judge's acceptance
        report["judge"] = {
            "judged_by": getattr(judge, "name", type(judge).__name__),
            "answers_judged": verdicts.asked,
            "failures": verdicts.failures,  # counted as not acceptable
        }
        report |= _text_report(task, [ex for _, ex in kept], answers, teachers)
    check = task.answer_check
    if check.structured:  # per field, beside the record exact match (the accuracies above)
        golds = [check.parse(g) for g in gold]
        report["field_scores"] = {
            "student": field_scores(golds, [check.parse(a.student_text) for a in answers]),
            "routed": field_scores(golds, [check.parse(a.text) for a in answers]),
        }
    return Evaluation(report, curve.teacher_share.tolist(), curve.accuracy.tolist())


def _text_report(
    task: Task, examples: Sequence[Example], answers: Sequence[Answer], teachers: Sequence[Any]
) -> dict[str, Any]:
    """BLEU and chrF against the references; the slot error rate where the rubric's
    program counts slot errors (its function carries ``slot_errors`` and ``parse``)."""
    out: dict[str, Any] = {}
    texts = {
        "student": [a.student_text for a in answers],
        "routed": [a.text for a in answers],
        "teacher": [t.text for t in teachers],
    }
    references = [ex.references or (ex.answer,) for ex in examples]
    out["text_scores"] = {who: text_scores(t, references) for who, t in texts.items()}
    rubric = task.judge.function or task.judge.simulator_function if task.judge else None
    program = load_function(rubric) if rubric else None
    if program is not None and hasattr(program, "slot_errors") and hasattr(program, "parse"):
        prompts = [ex.chat()[-1]["content"] for ex in examples]
        out["slot_error_rate"] = {
            who: slot_error_rate(program.slot_errors, program.parse, prompts, t)
            for who, t in texts.items()
        }
    return out
