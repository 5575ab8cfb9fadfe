"""A forced function on a structured task is answered as that function's call.

Over real HTTP against a real gateway (the tiny student constrained by the task's schema,
the teacher the simulator behind the Anthropic SDK), with the route forced to the student
and to the teacher: chat completions and the Responses API, whole and streamed, every body
and event validated against OpenAI's schemas. Every other use of tools is a 400 that names
the parameter and says what is supported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import Gateway, serve_in_thread, write_calibrator, write_task
from tests.gateway.test_openai_conformance import ROUTES, chunks, validate
from tests.gateway.test_structured import SCHEMA as TICKET_SCHEMA
from tests.gateway.test_structured import Ticket

KEY_ENV = "DISTILLGATE_TOOLS_TEACHER_KEY"
PROMPT = "where is my new card"


TEACHER_SAYS = {"intent": "card_arrival", "urgent": True}

# A SNIPS-like command: the intent and its slots, as pydantic-ai's users would model it
# (the intents in lower case: the tiny student's tokenizer has no capitals).
INTENTS = (
    "add_to_playlist",
    "book_restaurant",
    "get_weather",
    "play_music",
    "rate_book",
    "search_creative_work",
    "search_screening_event",
)
SLOT = {"type": "string", "maxLength": 16}
COMMAND_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": list(INTENTS)},
        "slots": {
            "type": "object",
            "properties": {"artist": SLOT, "playlist": SLOT},
            "additionalProperties": False,
        },
    },
    "required": ["intent", "slots"],
    "additionalProperties": False,
}
COMMAND_PROMPT = "play some jazz by miles davis"
COMMAND_TEACHER_SAYS = {"intent": "play_music", "slots": {"artist": "miles davis"}}


def function(name: str = "Ticket", parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    params = TICKET_SCHEMA if parameters is None else parameters
    return {"type": "function", "function": {"name": name, "parameters": params}}


def named(name: str = "Ticket") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


@pytest.fixture(scope="module")
def structured(tiny_student, run_gateway, tmp_path_factory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    """``tickets`` and ``commands`` answer JSON of their schemas; ``banking77`` plain text.
    Each escalates to the simulator, which knows one answer for each task."""
    references = {
        PROMPT: json.dumps(TEACHER_SAYS),
        COMMAND_PROMPT: json.dumps(COMMAND_TEACHER_SAYS),
    }
    served = serve_in_thread(create_sim_app(SimulatedAnswers(references)))
    tasks = tmp_path_factory.mktemp("tool-tasks")
    calibrator = write_calibrator(tasks / "c.json", tiny_student.path)
    teacher = f'[teacher]\nbase_url = "{served.url}"\napi_key_env = "{KEY_ENV}"\n'
    write_task(tasks, tiny_student.path, extra=f'calibrator = "{calibrator}"\n{teacher}')
    for name, schema in (("tickets", TICKET_SCHEMA), ("commands", COMMAND_SCHEMA)):
        (tasks / f"{name}.schema.json").write_text(json.dumps(schema))
        (tasks / f"{name}.toml").write_text(
            f'student = "{tiny_student.path}"\nanswer_schema_file = "{name}.schema.json"\n'
            f'calibrator = "{calibrator}"\n{teacher}[generation]\nmax_tokens = 80\n'
        )
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "test-key")
    yield run_gateway(Settings(tasks_dir=tasks, allow_force_route=True))
    mp.undo()
    served.stop()


def post(gw: Gateway, path: str, route: str | None, **body: Any) -> httpx.Response:
    headers = {"x-distillgate-force-route": route} if route else {}
    r = httpx.post(f"{gw.url}/v1/{path}", json=body, headers=headers, timeout=30)
    if r.status_code == 200:
        if route is not None:
            assert r.headers["x-distillgate-route"] == route
        validate(
            r.json(), "CreateChatCompletionResponse" if path.startswith("chat") else "Response"
        )
    else:
        validate(r.json(), "ErrorResponse")
    return r


def chat(gw: Gateway, route: str | None, **body: Any) -> httpx.Response:
    payload = {"model": "tickets", "messages": [{"role": "user", "content": PROMPT}], **body}
    return post(gw, "chat/completions", route, **payload)


@pytest.mark.parametrize("route", ROUTES)
def test_a_forced_function_is_answered_as_its_call(structured: Gateway, route: str) -> None:
    for choice in (named(), "required"):
        r = chat(structured, route, tools=[function()], tool_choice=choice)
        assert r.status_code == 200, r.text
        (answer,) = r.json()["choices"]
        assert answer["finish_reason"] == "tool_calls"
        message = answer["message"]
        assert message["content"] is None
        (call,) = message["tool_calls"]
        assert call["type"] == "function" and call["id"].startswith("call")
        assert call["function"]["name"] == "Ticket"
        ticket = Ticket.model_validate_json(call["function"]["arguments"])
        if route == "teacher":
            assert ticket.model_dump() == TEACHER_SAYS
        # The same record the task answers without tools: the call only wraps it.
        plain = chat(structured, route).json()["choices"][0]["message"]["content"]
        assert json.loads(call["function"]["arguments"]) == json.loads(plain)


@pytest.mark.parametrize("route", ROUTES)
def test_a_streamed_call_arrives_as_tool_call_deltas(structured: Gateway, route: str) -> None:
    whole = chat(structured, route, tools=[function()], tool_choice=named()).json()
    arguments = whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    events = chunks(
        structured,
        "chat/completions",
        route,
        model="tickets",
        messages=[{"role": "user", "content": PROMPT}],
        tools=[function()],
        tool_choice=named(),
    )
    deltas = [c["delta"] for e in events for c in e["choices"]]
    first = deltas[0]["tool_calls"][0]
    assert deltas[0]["role"] == "assistant" and first["function"] == {
        "name": "Ticket",
        "arguments": "",
    }
    assert first["index"] == 0 and first["id"].startswith("call")
    pieces = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:] if d]
    assert len(pieces) > 1 or route == "teacher"  # the student's tokens, one by one
    assert "".join(pieces) == arguments
    assert not any(d.get("content") for d in deltas)
    assert [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]] == [
        "tool_calls"
    ]
    assert events[-1]["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"]


def responses_tool(parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    params = TICKET_SCHEMA if parameters is None else parameters
    return {"type": "function", "name": "Ticket", "parameters": params, "strict": True}


@pytest.mark.parametrize("route", ROUTES)
def test_the_responses_api_answers_a_function_call_item(structured: Gateway, route: str) -> None:
    body = {
        "model": "tickets",
        "input": PROMPT,
        "tools": [responses_tool()],
        "tool_choice": {"type": "function", "name": "Ticket"},
    }
    r = post(structured, "responses", route, **body)
    assert r.status_code == 200, r.text
    response = r.json()
    (item,) = response["output"]
    assert item["type"] == "function_call" and item["name"] == "Ticket"
    assert item["status"] == "completed" and item["call_id"].startswith("call")
    Ticket.model_validate_json(item["arguments"])
    assert response["tools"][0]["name"] == "Ticket"
    assert response["tool_choice"] == {"type": "function", "name": "Ticket"}

    headers = {"x-distillgate-force-route": route}
    with httpx.stream(
        "POST", f"{structured.url}/v1/responses", json={**body, "stream": True}, headers=headers
    ) as s:
        assert s.status_code == 200
        events = [json.loads(x[6:]) for x in s.iter_lines() if x.startswith("data: ")]
    for event in events:
        validate(event, "ResponseStreamEvent")
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.function_call_arguments.delta")
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    streamed = "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta"))
    assert streamed == item["arguments"] == events[-3]["arguments"]
    assert events[-1]["response"]["output"][0]["arguments"] == item["arguments"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_tools_a_student_cannot_honour_are_clear_400s(structured: Gateway) -> None:
    other = {**TICKET_SCHEMA, "required": ["intent"]}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"tools": [function()]}, "tools", "leaves the choice to the model"),
        ({"tools": [function()], "tool_choice": "auto"}, "tool_choice", "'auto'"),
        ({"tools": [function(), function("B")], "tool_choice": "required"}, "tools", "2 functions"),
        ({"tools": [function()], "tool_choice": named("Other")}, "tool_choice", "not in tools"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"tools": [function(parameters=other)], "tool_choice": named()}, "tools", "differ"),
        (
            {"tools": [{"type": "custom", "custom": {"name": "x"}}], "tool_choice": "required"},
            "tools.[0]",
            "'custom'",
        ),
        ({"functions": [{"name": "Ticket"}]}, "functions", "send tools"),
    ]
    for body, param, words in cases:
        r = chat(structured, None, **body)
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == param, (body, error)
        assert words in error["message"] and "Traceback" not in r.text
    plain = post(
        structured,
        "chat/completions",
        None,
        model="banking77",
        messages=[{"role": "user", "content": "card"}],
        tools=[function()],
        tool_choice="required",
    )
    assert plain.status_code == 400 and plain.json()["error"]["param"] == "tools"
    assert "plain text" in plain.json()["error"]["message"]
    hosted = post(
        structured,
        "responses",
        None,
        model="tickets",
        input=PROMPT,
        tools=[{"type": "web_search"}],
        tool_choice="required",
    )
    assert hosted.status_code == 400 and hosted.json()["error"]["param"] == "tools.[0]"


def test_tools_that_are_never_called_change_nothing(structured: Gateway) -> None:
    plain = chat(structured, "student").json()["choices"][0]
    ignored = chat(structured, "student", tools=[function()], tool_choice="none").json()
    assert ignored["choices"][0]["message"] == plain["message"]
    assert ignored["choices"][0]["finish_reason"] == "stop"


def test_a_client_schema_without_strict_mode_still_fits(structured: Gateway) -> None:
    """What instructor and LangChain send: titles, a description, no additionalProperties."""
    loose = Ticket.model_json_schema()
    assert "additionalProperties" not in loose
    r = chat(structured, "student", tools=[function(parameters=loose)], tool_choice="required")
    assert r.status_code == 200, r.text
