"""The capture record of one escalation or audit: the next training round's raw material.

Built from what the pipeline saw (the student's whole answer, its confidence, who decided)
and what the teacher said; redacted here when the task asks, so no unredacted text ever
leaves the request path.
"""

from __future__ import annotations

from gateway.capture import CapturedRoute, CaptureRecord, new_record_id
from gateway.engines.base import GenerationRequest, Message
from gateway.judges.base import Verdict
from gateway.pipeline.base import Answer
from gateway.pipeline.deployment import TaskRuntime
from gateway.pipeline.fields import field_confidences
from gateway.teachers.base import TeacherAnswer

__all__ = ["capture_record"]


def capture_record(
    runtime: TaskRuntime,
    gen: GenerationRequest,
    answer: Answer,
    route: CapturedRoute,
    reason: str,
    reply: TeacherAnswer | None = None,
    error: str | None = None,
    verdict: Verdict | None = None,
) -> CaptureRecord:
    """The record of one escalation or audit, redacted when the task asks for it."""
    turns = gen.messages or (Message("user", gen.prompt or ""),)
    messages = [{"role": m.role, "content": m.content} for m in turns]
    student, teacher = answer.student_text, reply.text if reply else None
    why = verdict.reason if verdict else None
    redacted: tuple[str, ...] | None = None
    redactor = runtime.redactor
    if redactor is not None:
        kinds: set[str] = set()

        def scrub(text: str) -> str:
            clean, found = redactor.redact(text)
            kinds.update(found)
            return clean

        messages = [{**m, "content": scrub(m["content"])} for m in messages]
        student = scrub(student)
        teacher = scrub(teacher) if teacher is not None else None
        why = scrub(why) if why is not None else None
        redacted = tuple(sorted(kinds))
    usage_counts = {
        "student_prompt_tokens": answer.prompt_tokens,
        "student_completion_tokens": len(answer.deltas),
    }
    latency = {"student": answer.student_latency_s}
    if reply is not None:
        usage_counts |= {"teacher_input_tokens": reply.input_tokens}
        usage_counts |= {"teacher_output_tokens": reply.output_tokens}
        latency["teacher"] = reply.latency_s
    calibration = runtime.calibration
    return CaptureRecord(
        record_id=new_record_id(),
        request_id=gen.request_id,
        task=runtime.task.name,
        route=route,
        reason=reason,
        messages=tuple(messages),
        student_answer=student,
        raw_confidence=answer.raw_confidence,
        confidence=answer.confidence,
        threshold=calibration.threshold if calibration else None,
        student_fingerprint=runtime.student_fingerprint,
        student_version=runtime.version_label,
        calibrator_version=calibration.version_id if calibration else None,
        teacher_answer=teacher,
        teacher_model=reply.model if reply else None,
        teacher_error=error,
        teacher_finish_reason=reply.finish_reason if reply else None,
        usage=usage_counts,
        latency_s=latency,
        redacted=redacted,
        student_fields=field_confidences(answer.deltas)
        if runtime.task.answer_check.structured
        else {},
        verdict=verdict.acceptable if verdict else None,
        verdict_reason=why,
    )
