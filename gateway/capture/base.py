"""The capture seam: the record every escalation and audit produces, and where it goes.

A ``CaptureRecord`` is one (prompt, student answer, teacher answer, confidence) example for
the next training round, with enough context to judge it later: which student and
calibrator produced the decision, why it was routed, what it cost. The schema is
versioned (``SCHEMA_VERSION``); readers refuse versions they do not know. Its JSON form is
documented field by field in docs/capture.md.

``record_id`` is the idempotency key: a sink writes each id at most once, so a record that
is retried (after a timeout whose write did land, or replayed from the spool) is never
duplicated downstream.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "SCHEMA_VERSION",
    "CaptureRecord",
    "CaptureSink",
    "CapturedRoute",
    "UnknownSchema",
    "new_record_id",
]

SCHEMA_VERSION = 1

CapturedRoute = Literal["teacher", "student-fallback", "audit", "shadow"]


class UnknownSchema(ValueError):
    """A captured record of a schema version this code does not read."""


def new_record_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class CaptureRecord:
    record_id: str
    request_id: str
    task: str
    route: CapturedRoute
    reason: str  # low_confidence | invalid_answer | forced | audit; a shadow's own decision
    messages: tuple[dict[str, str], ...]  # what the teacher was asked, system turn first
    student_answer: str
    raw_confidence: float
    confidence: float
    threshold: float | None
    student_fingerprint: str | None
    calibrator_version: str | None
    teacher_answer: str | None
    teacher_model: str | None
    teacher_error: str | None
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: dict[str, float] = field(default_factory=dict)
    redacted: tuple[str, ...] | None = None  # None: redaction off; else the kinds removed
    captured_at: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION
    # "length": the teacher stopped at the client's max_tokens, so its answer is cut.
    teacher_finish_reason: str | None = None
    # The registry version that decided (``none`` at cold start, ``static`` outside a loop).
    student_version: str | None = None
    # A structured task's student answer, field by field: each field's confidence.
    student_fields: dict[str, float] = field(default_factory=dict)
    # A free-text task's judge on the student's answer (audits, shadows): None, not judged
    # (not a judged task, or the judge failed); the reason as the judge gave it.
    verdict: bool | None = None
    verdict_reason: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> CaptureRecord:
        raw: dict[str, Any] = json.loads(text)
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise UnknownSchema(f"capture schema version {raw.get('schema_version')!r}")
        raw["messages"] = tuple(raw["messages"])
        if raw.get("redacted") is not None:
            raw["redacted"] = tuple(raw["redacted"])
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ValueError(f"malformed capture record: {exc}") from None

    @property
    def prompt(self) -> str:
        """The last user turn: what a ``last_user_message`` student is trained on."""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


@runtime_checkable
class CaptureSink(Protocol):
    """Durable storage for records. ``write`` is all-or-error and idempotent by record id
    (it returns how many records were new); implementations raise only ``CaptureError``."""

    async def write(self, records: Sequence[CaptureRecord]) -> int: ...

    async def aclose(self) -> None: ...
