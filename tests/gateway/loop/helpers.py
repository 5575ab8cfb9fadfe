"""Captured records as a gateway writes them, for the loop's tests."""

from __future__ import annotations

from gateway.capture.base import CapturedRoute, CaptureRecord, new_record_id


def captured(
    prompt: str,
    teacher: str,
    *,
    route: CapturedRoute = "teacher",
    student: str = "",
    version: str = "none",
    at: float = 0.0,
    reason: str | None = None,
) -> CaptureRecord:
    return CaptureRecord(
        record_id=new_record_id(),
        request_id="r",
        task="banking77",
        route=route,
        reason=reason or ("audit" if route == "audit" else "no_student"),
        messages=({"role": "user", "content": prompt},),
        student_answer=student,
        raw_confidence=0.0,
        confidence=0.0,
        threshold=None,
        student_fingerprint=None,
        calibrator_version=None,
        teacher_answer=teacher,
        teacher_model="sim",
        teacher_error=None,
        captured_at=at,
        student_version=version,
    )
