"""What each span of the data path says: OpenTelemetry's GenAI attribute names where they
exist (``gen_ai.*``), ``distillgate.*`` for the gateway's own.

Built only for a span that records (``span.is_recording()``), so an untraced request pays
nothing for them. Text (the prompt, the answers) only where ``Tracing.record_text`` allows
it, redacted as the task's capture is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.tracing import Tracing, messages_attribute

if TYPE_CHECKING:
    from gateway.capture import CaptureRecord
    from gateway.engines.base import GenerationRequest
    from gateway.pipeline.base import Answer
    from gateway.pipeline.decision import Decision
    from gateway.pipeline.deployment import TaskRuntime
    from gateway.pipeline.student import StudentTurn
    from gateway.tasks import Task
    from gateway.teachers.base import TeacherAnswer, TeacherRequest

__all__ = [
    "answer_attributes",
    "capture_attributes",
    "decision_attributes",
    "student_attributes",
    "teacher_attributes",
    "teacher_reply_attributes",
]

Attributes = dict[str, Any]


def student_attributes(
    runtime: TaskRuntime, gen: GenerationRequest, turn: StudentTurn, tracing: Tracing
) -> Attributes:
    out: Attributes = {
        "gen_ai.operation.name": "chat" if gen.messages else "text_completion",
        "gen_ai.provider.name": "distillgate",
        "gen_ai.request.model": runtime.task.name,
        "gen_ai.response.model": runtime.version_label,
        "gen_ai.request.max_tokens": gen.sampling.max_tokens,
        "gen_ai.request.temperature": gen.sampling.temperature,
        "gen_ai.response.finish_reasons": [turn.finish_reason],
        "gen_ai.usage.input_tokens": turn.deltas[-1].prompt_tokens if turn.deltas else 0,
        "gen_ai.usage.output_tokens": len(turn.shown),
        "distillgate.student_version": runtime.version_label,
        "distillgate.engine": type(runtime.engine).__name__,
    }
    if tracing.record_text:
        turns = gen.messages or ()
        prompt = [(m.role, m.content) for m in turns] or [("user", gen.prompt or "")]
        out["gen_ai.input.messages"] = _redacted(runtime, messages_attribute(prompt))
        answer = messages_attribute([("assistant", turn.text)])
        out["gen_ai.output.messages"] = _redacted(runtime, answer)
    return out


def decision_attributes(runtime: TaskRuntime, turn: StudentTurn, decision: Decision) -> Attributes:
    calibration = runtime.calibration
    return {
        "distillgate.confidence": turn.confidence,
        "distillgate.raw_confidence": turn.raw_confidence,
        "distillgate.threshold": calibration.threshold if calibration else 0.0,
        "distillgate.escalate": decision.escalate,
        "distillgate.reason": decision.reason.value,
        "distillgate.student_version": runtime.version_label,
    }


def teacher_attributes(task: Task, request: TeacherRequest, purpose: str) -> Attributes:
    teacher = task.teacher
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": teacher.provider if teacher else "",
        "gen_ai.request.model": teacher.model if teacher else "",
        "gen_ai.request.max_tokens": request.max_tokens,
        "distillgate.purpose": purpose,  # escalation, audit or shadow
        "distillgate.task": task.name,
    }


def teacher_reply_attributes(task: Task, reply: TeacherAnswer) -> Attributes:
    return {
        "gen_ai.response.model": reply.model,
        "gen_ai.response.finish_reasons": [reply.finish_reason],
        "gen_ai.usage.input_tokens": reply.input_tokens,
        "gen_ai.usage.output_tokens": reply.output_tokens,
        "distillgate.teacher.cost_usd": task.prices.teacher_cost(
            reply.input_tokens, reply.output_tokens
        ),
    }


def capture_attributes(record: CaptureRecord, queued: int) -> Attributes:
    return {
        "distillgate.capture.record_id": record.record_id,
        "distillgate.capture.route": record.route,
        "distillgate.capture.reason": record.reason,
        "distillgate.capture.queued": queued,
    }


def answer_attributes(task: Task, answer: Answer) -> Attributes:
    """The request's outcome, on its own span: what a search by route or reason finds."""
    attributes: Attributes = {
        "gen_ai.request.model": task.name,
        "gen_ai.usage.input_tokens": answer.prompt_tokens,
        "gen_ai.usage.output_tokens": answer.completion_tokens,
        "distillgate.route": answer.route.value,
        "distillgate.reason": answer.reason.value,
        "distillgate.confidence": answer.confidence,
        "distillgate.student_version": answer.student_version,
    }
    if answer.budget_spent is not None:  # the teacher was not asked: this budget is spent
        attributes["distillgate.budget_spent"] = answer.budget_spent
    return attributes


def _redacted(runtime: TaskRuntime, text: str) -> str:
    redactor = runtime.redactor
    return text if redactor is None else redactor.redact(text)[0]
