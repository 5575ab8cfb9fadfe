"""What a valid answer is and when two are the same: labels, a JSON Schema, or free text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.answers import AnswerCheck, SchemaProblem, answer_check, check_schema, fits_schema
from gateway.tasks import Task, TaskConfigError, load_task

SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["GetWeather", "PlayMusic"]},
        "slots": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["intent", "slots"],
    "additionalProperties": False,
}


def test_a_structured_answer_must_parse_and_fit_the_schema() -> None:
    check = AnswerCheck(schema=SCHEMA)
    good = '{"intent":"GetWeather","slots":{"city":"Paris"}}'
    assert check.valid(good) and check.parse(good) == json.loads(good)
    assert check.problem(good) is None
    assert not check.valid('{"intent":"GetWeather","slots":{"city":"Paris"}')  # cut short
    assert check.problem('{"intent":"GetWeather"') == "not JSON"
    bad = '{"intent":"BookFlight","slots":{}}'
    assert not check.valid(bad) and check.parse(bad) is None
    assert "intent" in (check.problem(bad) or "")
    assert not check.valid('{"intent":"PlayMusic","slots":{"year":1999}}')  # not a string


def test_structured_answers_compare_as_json_values() -> None:
    check = AnswerCheck(schema=SCHEMA)
    a = '{"intent":"GetWeather","slots":{"city":"Paris","timeRange":"noon"}}'
    b = '{ "slots": {"timeRange": "noon", "city": "Paris"}, "intent": "GetWeather" }'
    assert check.same(a, b) and check.key(a) == check.key(b)
    assert not check.same(a, a.replace("noon", "now"))
    assert not check.same("not json", "not  json")  # unparsed text compares as text


def test_a_clients_schema_fits_the_tasks_annotations_and_no_ops_aside() -> None:
    own = {
        "type": "object",
        "properties": {"intent": {"enum": ["a", "b"]}, "slots": {"type": "object"}},
        "required": ["intent", "slots"],
        "additionalProperties": False,
    }
    generated = {  # what pydantic, instructor or pydantic-ai write for the same model
        "title": "Command",
        "description": "A command.",
        "type": "object",
        "properties": {
            "slots": {"type": "object", "properties": {}, "title": "Slots"},
            "intent": {"enum": ["a", "b"], "title": "Intent"},
        },
        "required": ["slots", "intent"],
    }
    assert fits_schema(generated, own)
    assert fits_schema({**generated, "additionalProperties": False}, own)
    # The client may be looser only where every answer of the task's still fits it.
    assert not fits_schema(own, {**own, "additionalProperties": True})
    assert not fits_schema({**generated, "required": ["intent"]}, own)
    changed = {**generated, "properties": {**generated["properties"], "intent": {"enum": ["a"]}}}
    assert not fits_schema(changed, own)
    # A nested model, as pydantic writes it: a reference into $defs.
    nested = {
        **generated,
        "properties": {**generated["properties"], "slots": {"$ref": "#/$defs/Slots"}},
        "$defs": {"Slots": {"type": "object", "title": "Slots"}},
    }
    assert fits_schema(nested, own)
    assert not fits_schema({**nested, "$defs": {"Slots": {"type": "array"}}}, own)


def test_labels_and_free_text() -> None:
    labels = AnswerCheck(frozenset({"card_arrival"}))
    assert labels.valid("card_arrival") and not labels.valid("card")
    assert labels.problem("card") == "outside the answer set"
    assert not labels.structured and labels.same("a", "a") and not labels.same("a", "b")
    with pytest.raises(TypeError):
        labels.parse("{}")
    assert AnswerCheck().valid("anything at all")


def test_one_compiled_check_per_schema() -> None:
    assert answer_check(None, SCHEMA) is answer_check(None, json.loads(json.dumps(SCHEMA)))
    assert answer_check(None, SCHEMA) is not answer_check(frozenset({"x"}), SCHEMA)


def test_a_task_declares_its_schema_inline_or_in_a_file(tmp_path: Path) -> None:
    (tmp_path / "answer.schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "snips.toml").write_text(
        'student = "s"\nanswer_schema_file = "answer.schema.json"\n'
    )
    task = load_task(tmp_path / "snips.toml")
    assert task.answer_schema == SCHEMA and task.answer_check.structured
    inline = Task(name="t", student=Path("s"), answer_schema=SCHEMA)
    assert inline.answer_check is task.answer_check


def test_a_broken_schema_is_refused_when_the_task_loads(tmp_path: Path) -> None:
    with pytest.raises(SchemaProblem, match="type"):
        check_schema({"type": "no such type"})
    (tmp_path / "bad.schema.json").write_text('{"type": 3}')
    (tmp_path / "t.toml").write_text('student = "s"\nanswer_schema_file = "bad.schema.json"\n')
    with pytest.raises(TaskConfigError, match=r"t.toml: answer_schema_file .*bad.schema.json"):
        load_task(tmp_path / "t.toml")
    (tmp_path / "u.toml").write_text('student = "s"\n[answer_schema]\ntype = "nope"\n')
    with pytest.raises(TaskConfigError, match=r"answer_schema: .*not a valid JSON Schema"):
        load_task(tmp_path / "u.toml")
