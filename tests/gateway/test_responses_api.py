"""``POST /v1/responses`` means what chat completions mean, in the Responses API's shapes.

Driven through the official ``openai`` SDK (``responses.create``, streamed and not) and raw
HTTP against a real gateway, with the route forced to the student and to the teacher; every
body and stream event is validated against OpenAI's published schemas (``Response``,
``ResponseStreamEvent``, ``ErrorResponse``), as the chat conformance suite does.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway
from tests.gateway.test_openai_conformance import (
    IN_DOMAIN,
    ROUTES,
    TEACHER_SAYS,
    chat,
    validate,
)
from tests.gateway.test_openai_conformance import gw as conformance_gateway  # noqa: F401

LOGPROBS = ["message.output_text.logprobs"]


@pytest.fixture(scope="module")
def gw(conformance_gateway: Gateway) -> Gateway:  # noqa: F811
    """The chat conformance suite's gateway: task banking77 escalates to an Anthropic
    teacher, openai-teacher to an OpenAI-compatible one."""
    return conformance_gateway


ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
CLOSING = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def respond(gw: Gateway, route: str | None, **body: Any) -> httpx.Response:
    headers = {"x-distillgate-force-route": route} if route else {}
    payload = {"model": "banking77", "input": IN_DOMAIN, **body}
    r = httpx.post(f"{gw.url}/v1/responses", json=payload, headers=headers, timeout=30)
    if r.status_code == 200:
        validate(r.json(), "Response")
        if route is not None:
            assert r.headers["x-distillgate-route"] == route
    else:
        validate(r.json(), "ErrorResponse")
    return r


def text_of(response: dict[str, Any]) -> str:
    (item,) = response["output"]
    (part,) = item["content"]
    return str(part["text"])


def events(gw: Gateway, route: str, **body: Any) -> list[dict[str, Any]]:
    """A stream's events, in order, each validated against OpenAI's event schema."""
    payload = {"model": "banking77", "input": IN_DOMAIN, "stream": True, **body}
    headers = {"x-distillgate-force-route": route}
    out: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", f"{gw.url}/v1/responses", json=payload, headers=headers, timeout=30
    ) as r:
        assert r.status_code == 200 and r.headers["x-distillgate-route"] == route
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                assert event["type"] == kind
                validate(event, "ResponseStreamEvent")
                out.append(event)
    return out


@pytest.mark.parametrize("route", ROUTES)
def test_a_response_serves_what_a_chat_completion_serves(gw: Gateway, route: str) -> None:
    served = chat(gw, route)
    body = respond(gw, route).json()
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["model"] == "banking77" and body["incomplete_details"] is None
    assert text_of(body) == served["choices"][0]["message"]["content"]
    assert body["usage"]["input_tokens"] == served["usage"]["prompt_tokens"]
    assert body["usage"]["output_tokens"] == served["usage"]["completion_tokens"]
    if route == "teacher":
        assert text_of(body) == TEACHER_SAYS
    # The SDK, unmodified, as a backend calls it; the headers say who answered.
    client = gw.client()
    raw = client.responses.with_raw_response.create(
        model="banking77",
        instructions="Classify the customer's message.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": IN_DOMAIN}]}],
        extra_headers={"x-distillgate-force-route": route},
    )
    assert raw.headers["x-distillgate-route"] == route
    assert float(raw.headers["x-distillgate-confidence"]) > 0
    assert raw.parse().output_text == text_of(body)


@pytest.mark.parametrize("route", ROUTES)
def test_the_stream_is_the_responses_event_sequence(gw: Gateway, route: str) -> None:
    whole = text_of(respond(gw, route).json())
    seen = events(gw, route)
    kinds = [e["type"] for e in seen]
    assert kinds[:4] == ORDER and kinds[-4:-1] == CLOSING and kinds[-1] == "response.completed"
    assert set(kinds[4:-4]) == {"response.output_text.delta"} and len(kinds) > 8
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    deltas = "".join(e["delta"] for e in seen if e["type"] == "response.output_text.delta")
    assert deltas == whole == seen[-4]["text"] == text_of(seen[-1]["response"])
    assert seen[0]["response"]["status"] == "in_progress" and seen[0]["response"]["output"] == []
    # The SDK reads the same stream to the same text.
    stream = gw.client().responses.create(
        model="banking77",
        input=IN_DOMAIN,
        stream=True,
        extra_headers={"x-distillgate-force-route": route},
    )
    final = [e for e in stream if e.type == "response.completed"]
    assert len(final) == 1 and final[0].response.output_text == whole


@pytest.mark.parametrize("route", ROUTES)
def test_max_output_tokens_cuts_and_a_large_one_is_a_ceiling(gw: Gateway, route: str) -> None:
    whole = respond(gw, route).json()
    cut = respond(gw, route, max_output_tokens=1).json()
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["usage"]["output_tokens"] == 1 and text_of(whole).startswith(text_of(cut))
    assert cut["output"][0]["status"] == "incomplete"
    roomy = respond(gw, route, max_output_tokens=4096).json()
    assert roomy["status"] == "completed" and text_of(roomy) == text_of(whole)
    streamed = events(gw, route, max_output_tokens=1)
    assert streamed[-1]["type"] == "response.incomplete"


@pytest.mark.parametrize("route", ROUTES)
def test_logprobs_are_included_when_asked(gw: Gateway, route: str) -> None:
    body = respond(gw, route, include=LOGPROBS, top_logprobs=2).json()
    (part,) = body["output"][0]["content"]
    assert part["logprobs"] and "".join(p["token"] for p in part["logprobs"]) == part["text"]
    assert all(p["logprob"] <= 0 and len(p["top_logprobs"]) <= 2 for p in part["logprobs"])
    plain = respond(gw, route).json()
    assert plain["output"][0]["content"][0]["logprobs"] == []
    streamed = events(gw, route, include=LOGPROBS, top_logprobs=1)
    deltas = [e for e in streamed if e["type"] == "response.output_text.delta"]
    assert all(len(e["logprobs"]) == 1 for e in deltas)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools"),
        ({"include": ["reasoning.encrypted_content"]}, "include.[0]"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input.[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input.[0].content"),
        ({"input": []}, "input"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "no-such-task"}, "model"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_the_parameter(
    gw: Gateway, body: dict[str, Any], param: str
) -> None:
    r = respond(gw, None, **body)
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["param"] == param


def test_the_sdk_raises_its_own_error_types(gw: Gateway) -> None:
    client = gw.client()
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="banking77", input="hi", previous_response_id="resp_1")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-task", input="hi")
