"""The accept/escalate rule, alone: every reason it can give."""

from __future__ import annotations

import pytest

from gateway.pipeline.decision import Decision, Reason, decide


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"confidence": 0.95, "valid": True}, Decision(False, Reason.CONFIDENT)),
        ({"confidence": 0.90, "valid": True}, Decision(False, Reason.CONFIDENT)),  # at the bar
        ({"confidence": 0.89, "valid": True}, Decision(True, Reason.LOW_CONFIDENCE)),
        ({"confidence": 0.99, "valid": False}, Decision(True, Reason.INVALID_ANSWER)),
        (
            {"confidence": 0.5, "valid": True, "has_teacher": False},
            Decision(False, Reason.NO_TEACHER),
        ),
        (
            {"confidence": 0.99, "valid": False, "has_teacher": False},
            Decision(False, Reason.NO_TEACHER),
        ),
        ({"confidence": 0.99, "valid": True, "forced": "teacher"}, Decision(True, Reason.FORCED)),
        ({"confidence": 0.1, "valid": False, "forced": "student"}, Decision(False, Reason.FORCED)),
    ],
)
def test_decide(kw: dict[str, object], expected: Decision) -> None:
    assert decide(threshold=0.9, **kw) == expected  # type: ignore[arg-type]
