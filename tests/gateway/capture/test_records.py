from __future__ import annotations

import json

import pytest

from gateway.capture import SCHEMA_VERSION, CaptureRecord, UnknownSchema
from tests.gateway.capture.records import record


def test_a_record_round_trips_through_json() -> None:
    r = record(1, redacted=("EMAIL",), usage={"teacher_input_tokens": 12})
    assert CaptureRecord.from_json(r.to_json()) == r
    assert json.loads(r.to_json())["schema_version"] == SCHEMA_VERSION


def test_an_unknown_schema_version_is_refused() -> None:
    raw = json.loads(record(1).to_json()) | {"schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(UnknownSchema):
        CaptureRecord.from_json(json.dumps(raw))


def test_prompt_is_the_last_user_turn() -> None:
    r = record(
        1,
        messages=(
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
        ),
    )
    assert r.prompt == "second"
