"""A structured task through the real gateway and the openai SDK: the tiny student,
constrained by the task's schema, answers JSON that the SDK's ``parse`` turns into the
client's pydantic model; a schema that is not the task's is a clear 400."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import httpx
import openai
import pydantic
import pytest

from gateway.settings import Settings
from tests.conftest import Gateway


class Ticket(pydantic.BaseModel):
    intent: Literal["card_arrival", "exchange_rate"]
    urgent: bool


# The task's file, as a team writes it: what the SDK derives from Ticket, without titles.
SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["card_arrival", "exchange_rate"]},
        "urgent": {"type": "boolean"},
    },
    "required": ["intent", "urgent"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def gw(tiny_student, run_gateway, tmp_path_factory: pytest.TempPathFactory) -> Gateway:  # type: ignore[no-untyped-def]
    tasks = tmp_path_factory.mktemp("structured")
    (tasks / "ticket.schema.json").write_text(json.dumps(SCHEMA))
    (tasks / "tickets.toml").write_text(
        f'student = "{tiny_student.path}"\nanswer_schema_file = "ticket.schema.json"\n'
        "[generation]\nmax_tokens = 48\n"
    )
    return run_gateway(Settings(tasks_dir=Path(tasks)))  # type: ignore[no-any-return]


def test_parse_with_a_pydantic_model_returns_the_parsed_object(gw: Gateway) -> None:
    client = gw.client()
    for text in ("where is my card", "rate for euros?", 'zq }{ " xv'):
        done = client.chat.completions.parse(
            model="tickets",
            messages=[{"role": "user", "content": text}],
            response_format=Ticket,
        )
        ticket = done.choices[0].message.parsed
        assert isinstance(ticket, Ticket), done.choices[0].message.content
        assert done.choices[0].finish_reason == "stop"
    raw = client.chat.completions.with_raw_response.create(
        model="tickets", messages=[{"role": "user", "content": "where is my card"}]
    )
    field, confidence = raw.headers["x-distillgate-least-sure-field"].split("; confidence=")
    assert field in ("intent", "urgent") and 0.0 < float(confidence) < 1.0  # never seen JSON
    plain = client.chat.completions.create(
        model="tickets",
        messages=[{"role": "user", "content": "where is my card"}],
        response_format={"type": "json_object"},
    )
    Ticket.model_validate_json(plain.choices[0].message.content or "")
    # Without response_format the task answers the same structure: it is the task's.
    bare = client.chat.completions.create(
        model="tickets", messages=[{"role": "user", "content": "where is my card"}]
    )
    assert bare.choices[0].message.content == plain.choices[0].message.content


def test_a_schema_that_is_not_the_tasks_is_a_400(gw: Gateway) -> None:
    class Other(pydantic.BaseModel):
        city: str

    with pytest.raises(openai.BadRequestError) as info:
        gw.client().chat.completions.parse(
            model="tickets",
            messages=[{"role": "user", "content": "hi"}],
            response_format=Other,
        )
    body = info.value.body
    assert isinstance(body, dict)
    assert (body["param"], body["code"]) == ("response_format", "schema_mismatch")
    assert "GET /v1/models/" in body["message"]


def test_the_model_entry_shows_the_answer_schema(gw: Gateway) -> None:
    entry = httpx.get(f"{gw.url}/v1/models/tickets").json()
    assert entry["answer_schema"] == SCHEMA


def test_responses_parse_with_a_pydantic_model_returns_the_parsed_object(gw: Gateway) -> None:
    """The Responses API's ``text.format`` follows ``response_format``'s rules."""
    client = gw.client()
    for text in ("where is my card", 'zq }{ " xv'):
        done = client.responses.parse(model="tickets", input=text, text_format=Ticket)
        assert isinstance(done.output_parsed, Ticket), done.output_text
        assert done.status == "completed"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.parse(
            model="tickets", input="hi", text_format=pydantic.create_model("Other", city=(str, ...))
        )
    body = info.value.body
    assert isinstance(body, dict)
    assert (body["param"], body["code"]) == ("text.format", "schema_mismatch")
