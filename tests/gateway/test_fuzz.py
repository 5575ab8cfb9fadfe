"""Hostile and malformed input, generated: whatever a client sends, the gateway answers
with a valid OpenAI body or a valid OpenAI error with a 4xx status, never a 5xx, and
stays up. Real HTTP against the session gateway (tiny student), raw bodies (the SDK would
refuse most of these before sending)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

# Text as clients send it, and as they should not: any unicode (control characters,
# surrogate-free), long runs, JSON-looking and template-looking fragments.
texts = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=50),
    st.sampled_from(["", " ", "{{ system }}", "<|user|>", "<|end|>", "\u202e", "card " * 2000]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Plausible bodies: the right types, hostile contents (most reach the student).
plausible_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "user", "user", "system", "assistant", "developer"])},
        optional={"content": texts},
    ),
    min_size=1,
    max_size=5,
).map(lambda turns: [*turns, {"role": "user", "content": "card"}] if len(turns) % 2 else turns)
plausible_bodies = st.fixed_dictionaries(
    {"model": st.just("banking77"), "messages": plausible_messages},
    optional={
        "max_tokens": st.integers(1, 24),
        "temperature": st.floats(0, 2, allow_nan=False),
        "top_p": st.floats(0.01, 1, allow_nan=False),
        "stop": st.one_of(texts, st.lists(texts, max_size=4)),
        "logprobs": st.booleans(),
        "seed": st.integers(0, 2**31),
        "stream": st.booleans(),
        "user": texts,
    },
)

# Hostile bodies: any field with any JSON value, unknown roles, wrong shapes.
roles = st.sampled_from(["user", "system", "assistant", "developer", "tool", "robot", "", 7])
messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles},
        optional={"content": st.one_of(texts, json_values), "name": json_values},
    ),
    max_size=6,
)
models = st.one_of(st.just("banking77"), json_values)
fields = {
    "messages": st.one_of(messages, json_values),
    "max_tokens": st.one_of(st.integers(-5, 100), json_values),
    "temperature": st.one_of(st.floats(-1, 3, allow_nan=False), json_values),
    "top_p": st.one_of(st.floats(-1, 2, allow_nan=False), json_values),
    "stop": st.one_of(texts, st.lists(texts, max_size=6), json_values),
    "logprobs": st.one_of(st.booleans(), json_values),
    "top_logprobs": st.one_of(st.integers(-2, 30), json_values),
    "n": st.one_of(st.integers(-1, 3), json_values),
    "stream": st.booleans(),
    "seed": st.one_of(st.integers(-(2**70), 2**70), json_values),
}
hostile_bodies = st.fixed_dictionaries({"model": models}, optional=fields)


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code == 200:
        if response.headers["content-type"].startswith("text/event-stream"):
            assert response.text.rstrip().endswith("data: [DONE]")
        else:
            assert response.json()["choices"][0]["message"]["role"] == "assistant"
        return
    assert 400 <= response.status_code < 500
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] in {"invalid_request_error", "not_found_error", "authentication_error"}
    assert "Traceback" not in response.text


@pytest.fixture(scope="module")
def http(gateway: Gateway) -> Any:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        yield client


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=plausible_bodies)
def test_hostile_text_in_a_wellformed_body_gets_an_answer_or_a_4xx(
    http: httpx.Client, body: dict[str, Any]
) -> None:
    check(http.post("/v1/chat/completions", content=json.dumps(body)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=hostile_bodies)
def test_any_chat_body_gets_an_answer_or_a_4xx(http: httpx.Client, body: dict[str, Any]) -> None:
    check(http.post("/v1/chat/completions", content=json.dumps(body)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
        st.integers(1, 3000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    ),
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
)
def test_any_bytes_get_a_4xx_or_an_answer(http: httpx.Client, raw: bytes, path: str) -> None:
    check(http.post(path, content=raw, headers={"content-type": "application/json"}))


def test_the_gateway_is_still_up_and_answering(http: httpx.Client) -> None:
    assert http.get("/readyz").status_code == 200
    body = {"model": "banking77", "messages": [{"role": "user", "content": "my card"}]}
    assert http.post("/v1/chat/completions", json=body).status_code == 200
