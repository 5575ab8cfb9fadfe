"""The OpenAI-compatible API, called over real HTTP with the official openai SDK."""

from __future__ import annotations

import json
import math

import httpx
import openai
import pytest

from tests.conftest import LABELS, Gateway

CARD = [{"role": "user", "content": "I still have not received my card"}]


def test_chat_answers_an_in_domain_prompt_with_a_label(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="banking77", messages=CARD
    )
    assert raw.headers["x-request-id"].startswith("req-")
    assert raw.headers["x-distillgate-task"] == "banking77"
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.message.content == "card_arrival"
    assert choice.finish_reason == "stop"
    assert completion.model == "banking77" and completion.object == "chat.completion"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert (
        completion.usage.total_tokens
        == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_stream_yields_the_same_text_and_usage(gateway: Gateway) -> None:
    client = gateway.client()
    whole = client.chat.completions.create(model="banking77", messages=CARD)
    chunks = list(
        client.chat.completions.create(
            model="banking77", messages=CARD, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)


def test_raw_stream_is_sse_ending_in_done(gateway: Gateway) -> None:
    body = {"model": "banking77", "messages": CARD, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_request_id_is_echoed(gateway: Gateway) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "banking77", "messages": CARD},
        headers={"x-request-id": "client-42"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "client-42"


def test_logprobs_come_in_openai_shape(gateway: Gateway) -> None:
    completion = gateway.client().chat.completions.create(
        model="banking77", messages=CARD, logprobs=True, top_logprobs=3
    )
    entries = completion.choices[0].logprobs.content
    assert entries and len(entries) == completion.usage.completion_tokens
    for e in entries:
        assert len(e.top_logprobs) == 3
        assert e.logprob <= 0 and sum(math.exp(t.logprob) for t in e.top_logprobs) <= 1 + 1e-6
        assert e.top_logprobs[0].token == e.token  # greedy picks the top token
        assert e.bytes == list(e.token.encode())
        assert not any(t.token.startswith("<|") for t in e.top_logprobs)  # no special tokens
    # the logprobs spell the reply: no end token, none among the alternatives
    assert "".join(e.token for e in entries) == completion.choices[0].message.content


def test_completions_endpoint(gateway: Gateway) -> None:
    completion = gateway.client().completions.create(
        model="banking77", prompt="<|user|>where is my new card?<|assistant|>", logprobs=2
    )
    choice = completion.choices[0]
    assert choice.text in LABELS
    assert len(choice.logprobs.tokens) == completion.usage.completion_tokens
    assert choice.logprobs.text_offset[0] == 0
    streamed = gateway.client().completions.create(
        model="banking77", prompt="<|user|>where is my new card?<|assistant|>", stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == choice.text


def test_stop_strings_and_max_tokens(gateway: Gateway) -> None:
    client = gateway.client()
    stopped = client.chat.completions.create(model="banking77", messages=CARD, stop=["_"])
    assert stopped.choices[0].message.content == "card"
    assert stopped.choices[0].finish_reason == "stop"
    cut = client.chat.completions.create(model="banking77", messages=CARD, max_completion_tokens=1)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 1


def test_seeded_sampling_is_reproducible(gateway: Gateway) -> None:
    client = gateway.client()
    prompt = [{"role": "user", "content": "hmm"}]
    runs = {
        client.chat.completions.create(
            model="banking77", messages=prompt, temperature=2.0, seed=7, top_p=0.99
        )
        .choices[0]
        .message.content
        for _ in range(3)
    }
    assert len(runs) == 1


def test_user_and_metadata_are_accepted(gateway: Gateway) -> None:
    completion = gateway.client().chat.completions.create(
        model="banking77", messages=CARD, user="u-1", metadata={"team": "support"}
    )
    assert completion.choices[0].message.content


def test_models_lists_tasks(gateway: Gateway) -> None:
    client = gateway.client()
    assert [m.id for m in client.models.list()] == ["banking77"]
    assert client.models.retrieve("banking77").id == "banking77"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_health_and_readiness(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{gateway.url}/readyz").json() == {"status": "ready"}


def _chat(**fields: object) -> dict[str, object]:
    return {"model": "banking77", "messages": CARD, **fields}


BAD_REQUESTS = [
    ("malformed json", b"{not json", 400, None, None),
    ("messages not a list", _chat(messages="hi"), 400, "messages", "invalid_type"),
    ("temperature wrong type", _chat(temperature="hot"), 400, "temperature", "invalid_type"),
    (
        "temperature out of range",
        _chat(temperature=9),
        400,
        "temperature",
        "decimal_above_max_value",
    ),
    ("max_tokens zero", _chat(max_tokens=0), 400, "max_tokens", "integer_below_min_value"),
    ("missing model", {"messages": CARD}, 400, "model", "missing_required_parameter"),
    ("empty messages", _chat(messages=[]), 400, "messages", "empty_array"),
    (
        "no user message",
        _chat(messages=[{"role": "system", "content": "hi"}]),
        400,
        "messages",
        None,
    ),
    (
        "unknown role",
        _chat(messages=[{"role": "wizard", "content": "hi"}]),
        400,
        "messages.[0].role",
        "invalid_value",
    ),
    (
        "max_completion_tokens zero",
        _chat(max_completion_tokens=0),
        400,
        "max_completion_tokens",
        "integer_below_min_value",
    ),
    ("n=2", _chat(n=2), 400, "n", "unsupported_value"),
    (
        "tools",
        _chat(tools=[{"type": "function", "function": {"name": "f"}}]),
        400,
        "tools",
        "unsupported_parameter",
    ),
    (
        "json_object",
        _chat(response_format={"type": "json_object"}),
        400,
        "response_format",
        "unsupported_parameter",
    ),
    (
        "json_schema",
        _chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
        400,
        "response_format",
        "invalid_value",
    ),
    (
        "response_format of no known type",
        _chat(response_format={"type": "yaml"}),
        400,
        "response_format",
        "invalid_value",
    ),
    (
        "image part",
        _chat(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        ),
        400,
        "messages.[0].content",
        "unsupported_value",
    ),
    (
        "top_logprobs without logprobs",
        _chat(top_logprobs=2),
        400,
        "top_logprobs",
        "invalid_value",
    ),
    ("unknown model", _chat(model="gpt-9"), 404, "model", "model_not_found"),
    ("json array body", b"[1, 2]", 400, None, None),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "param", "code"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_input_gets_an_openai_error(
    gateway: Gateway, case: str, body: object, status: int, param: str | None, code: str | None
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in r.text
    assert (error["param"], error["code"]) == (param, code)
    assert r.headers["x-request-id"]


def test_text_response_format_is_accepted(gateway: Gateway) -> None:
    completion = gateway.client().chat.completions.create(
        model="banking77", messages=CARD, response_format={"type": "text"}
    )
    assert completion.choices[0].message.content in LABELS


def test_the_sdk_raises_typed_errors(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="banking77", messages=[], n=2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=CARD)
    with pytest.raises(openai.BadRequestError):  # refused before the stream opens
        client.chat.completions.create(model="banking77", messages=CARD, stream=True, n=2)


def test_a_raw_prompt_beyond_the_context_is_refused(gateway: Gateway) -> None:
    body = {"model": "banking77", "prompt": "card " * 400}
    r = httpx.post(f"{gateway.url}/v1/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] == "prompt"


def test_long_chat_text_is_read_like_the_student_was_trained(gateway: Gateway) -> None:
    long = gateway.client().chat.completions.create(
        model="banking77",
        messages=[{"role": "user", "content": "I still have not received my card " * 40}],
    )
    assert long.choices[0].message.content and long.usage.prompt_tokens < 80


def test_oversize_body_is_refused_with_413(gateway: Gateway) -> None:
    big = json.dumps(_chat(messages=[{"role": "user", "content": "x" * 2_000_000}])).encode()
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=big,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no content-length: the limit applies as the body streams in
        for _ in range(40):
            yield b"x" * 65536

    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413


def test_unknown_paths_and_methods_use_the_error_shape(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"] == {
        "message": "Invalid URL (GET /v1/nothing-here)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    r = httpx.get(f"{gateway.url}/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
