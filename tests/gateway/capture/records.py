"""Capture records for tests."""

from __future__ import annotations

from gateway.capture import CaptureRecord, new_record_id


def record(i: int, task: str = "banking77", **kw: object) -> CaptureRecord:
    fields: dict[str, object] = {
        "record_id": new_record_id(),
        "request_id": f"req-{i}",
        "task": task,
        "route": "teacher",
        "reason": "low_confidence",
        "messages": ({"role": "user", "content": f"prompt {i}"},),
        "student_answer": "card_arrival",
        "raw_confidence": 0.5,
        "confidence": 0.4,
        "threshold": 0.9,
        "student_fingerprint": "sha256:abc",
        "calibrator_version": "cal-123",
        "teacher_answer": "exchange_rate",
        "teacher_model": "claude-test",
        "teacher_error": None,
    }
    fields.update(kw)
    return CaptureRecord(**fields)  # type: ignore[arg-type]
