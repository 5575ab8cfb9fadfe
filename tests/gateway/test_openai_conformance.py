"""The same request means the same thing on both routes, in OpenAI's shapes.

Every option that changes what is served (``max_tokens``, ``max_completion_tokens``,
``stop``, ``logprobs``/``top_logprobs``, usage, ``response_format``) is driven through the
official ``openai`` SDK against a real gateway, with the route forced to the student and to
the teacher (the teacher simulator over real HTTP: Anthropic's protocol through the
anthropic SDK, and OpenAI's through httpx), whole and streamed, on both endpoints. Every
body and every stream chunk is validated against the schemas of OpenAI's own OpenAPI
document (``openai_schemas.json``, vendored by ``scripts/vendor_openai_schemas.py``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pydantic
import pytest

from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import LABELS, Gateway, serve_in_thread, write_calibrator, write_task

SCHEMAS = json.loads((Path(__file__).parent / "openai_schemas.json").read_text())
IN_DOMAIN = "I still have not received my card"
TEACHER_SAYS = "Refund_not_showing_up"  # what the simulator answers to IN_DOMAIN
ROUTES = ["student", "teacher"]
KEY_ENV = "DISTILLGATE_CONFORMANCE_TEACHER_KEY"


def _legacy_chunk() -> dict[str, Any]:
    """OpenAI documents no schema of its own for legacy stream chunks: they take the whole
    completion's shape, except that ``finish_reason`` is null until the last one (as in
    OpenAI's own streams)."""
    chunk = copy.deepcopy(SCHEMAS["$defs"]["CreateCompletionResponse"])
    finish = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
    finish["type"], finish["enum"] = ["string", "null"], [*finish["enum"], None]
    return chunk


DEFS = {**SCHEMAS["$defs"], "CompletionStreamChunk": _legacy_chunk()}


def validate(instance: Any, schema: str) -> None:
    jsonschema.validate(
        instance, {"$ref": f"#/$defs/{schema}", "$defs": DEFS}, cls=jsonschema.Draft202012Validator
    )


@pytest.fixture(scope="module")
def gw(tiny_student, run_gateway, tmp_path_factory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    """Task ``banking77`` escalates to an Anthropic teacher, ``openai-teacher`` to an
    OpenAI-compatible one (which returns its own logprobs when asked)."""
    served = serve_in_thread(create_sim_app(SimulatedAnswers({IN_DOMAIN: TEACHER_SAYS}, LABELS)))
    tasks = tmp_path_factory.mktemp("conformance-tasks")
    calibrator = write_calibrator(tasks / "c.json", tiny_student.path)
    for name, provider, url in (
        ("banking77", "anthropic", served.url),
        ("openai-teacher", "openai", f"{served.url}/v1"),
    ):
        teacher = (
            f'[teacher]\nprovider = "{provider}"\nmodel = "sim"\nbase_url = "{url}"\n'
            f'api_key_env = "{KEY_ENV}"\n'
        )
        write_task(tasks, tiny_student.path, name, f'calibrator = "{calibrator}"\n{teacher}')
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "test-key")
    yield run_gateway(Settings(tasks_dir=tasks, allow_force_route=True))
    mp.undo()
    served.stop()


def post(gw: Gateway, path: str, route: str | None, **body: Any) -> httpx.Response:
    headers = {"x-distillgate-force-route": route} if route else {}
    r = httpx.post(f"{gw.url}/v1/{path}", json=body, headers=headers, timeout=30)
    if route is not None and r.status_code == 200:
        assert r.headers["x-distillgate-route"] == route
    return r


def chat(gw: Gateway, route: str | None, model: str = "banking77", **kw: Any) -> dict[str, Any]:
    r = post(gw, "chat/completions", route, model=model, messages=[_user()], **kw)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    validate(body, "CreateChatCompletionResponse")
    return body


def _user(text: str = IN_DOMAIN) -> dict[str, str]:
    return {"role": "user", "content": text}


def chunks(gw: Gateway, path: str, route: str, **body: Any) -> list[dict[str, Any]]:
    """A stream's events, each validated against OpenAI's chunk schema."""
    headers = {"x-distillgate-force-route": route}
    payload = {"stream": True, "stream_options": {"include_usage": True}, **body}
    out: list[dict[str, Any]] = []
    schema = "CreateChatCompletionStreamResponse" if path == "chat/completions" else None
    with httpx.stream(
        "POST", f"{gw.url}/v1/{path}", json=payload, headers=headers, timeout=30
    ) as r:
        assert r.status_code == 200 and r.headers["x-distillgate-route"] == route
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        event = json.loads(line[len("data: ") :])
        if schema is not None:
            validate(event, schema)
        elif event["choices"]:
            validate(event, "CompletionStreamChunk")
        out.append(event)
    return out


def streamed_text(events: list[dict[str, Any]], chat_api: bool = True) -> str:
    key = "content"
    return "".join(
        (c["delta"].get(key) or "") if chat_api else c["text"] for e in events for c in e["choices"]
    )


def finish_of(events: list[dict[str, Any]]) -> str:
    reasons = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert len(reasons) == 1  # exactly one event ends the choice
    return str(reasons[0])


@pytest.mark.parametrize("route", ROUTES)
def test_max_tokens_is_honoured_on_both_routes(gw: Gateway, route: str) -> None:
    whole = chat(gw, route)["choices"][0]
    assert whole["finish_reason"] == "stop" and whole["message"]["content"]
    for field in ("max_tokens", "max_completion_tokens"):
        cut = chat(gw, route, **{field: 1})
        choice = cut["choices"][0]
        assert choice["finish_reason"] == "length"
        assert cut["usage"]["completion_tokens"] == 1
        assert whole["message"]["content"].startswith(choice["message"]["content"])
        assert choice["message"]["content"] != whole["message"]["content"]


@pytest.mark.parametrize("route", ROUTES)
def test_a_limit_above_the_tasks_is_a_ceiling_not_a_refusal(gw: Gateway, route: str) -> None:
    """What frameworks send by habit (256, 1024, 4096) against a task whose answers take at
    most 24 tokens: the task's answer, as if no limit had been sent."""
    whole = chat(gw, route)["choices"][0]
    for field in ("max_tokens", "max_completion_tokens"):
        for habit in (256, 4096, 1_000_000):
            choice = chat(gw, route, **{field: habit})["choices"][0]
            assert choice["message"]["content"] == whole["message"]["content"]
            assert choice["finish_reason"] == whole["finish_reason"] == "stop"
    completion = post(
        gw, "completions", route, model="banking77", prompt="my card is lost", max_tokens=4096
    )
    assert completion.status_code == 200
    assert completion.json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("route", ROUTES)
def test_stop_sequences_are_honoured_on_both_routes(gw: Gateway, route: str) -> None:
    full = chat(gw, route)["choices"][0]["message"]["content"]
    assert "_" in full
    stopped = chat(gw, route, stop=["_"])
    choice = stopped["choices"][0]
    assert choice["message"]["content"] == full.split("_")[0]
    assert choice["finish_reason"] == "stop"
    # a stop string the answer does not contain changes nothing
    assert chat(gw, route, stop="@@")["choices"][0]["message"]["content"] == full


def test_a_cut_answer_is_decided_on_the_whole_answer(gw: Gateway) -> None:
    """The confident student keeps a request whose client asks for one token: the cut
    is applied after the decision, so it costs no teacher call."""
    free = post(gw, "chat/completions", None, model="banking77", messages=[_user()])
    short = post(gw, "chat/completions", None, model="banking77", messages=[_user()], max_tokens=1)
    stopped = post(gw, "chat/completions", None, model="banking77", messages=[_user()], stop="_")
    assert free.headers["x-distillgate-route"] == "student"
    for r in (short, stopped):
        assert r.headers["x-distillgate-route"] == "student"
        assert r.headers["x-distillgate-confidence"] == free.headers["x-distillgate-confidence"]


@pytest.mark.parametrize("model", ["banking77", "openai-teacher"])
@pytest.mark.parametrize("route", ROUTES)
def test_logprobs_on_every_route_spell_the_reply(gw: Gateway, route: str, model: str) -> None:
    body = chat(gw, route, model=model, logprobs=True, top_logprobs=2)
    choice = body["choices"][0]
    entries = choice["logprobs"]["content"]
    assert choice["logprobs"]["refusal"] is None
    assert "".join(e["token"] for e in entries) == choice["message"]["content"]
    assert len(entries) == body["usage"]["completion_tokens"]
    for e in entries:
        assert e["logprob"] <= 0 and e["bytes"] == list(e["token"].encode())
        assert 1 <= len(e["top_logprobs"]) <= 2
        assert not any(t["token"].startswith("<|") for t in e["top_logprobs"])
    if route == "teacher" and model == "openai-teacher":  # the teacher's own logprobs
        assert all(e["logprob"] == 0.0 for e in entries)
    # cut answers keep spelling the reply
    cut = chat(gw, route, model=model, logprobs=True, stop=["_"])["choices"][0]
    assert "".join(e["token"] for e in cut["logprobs"]["content"]) == cut["message"]["content"]


@pytest.mark.parametrize("route", ROUTES)
def test_usage_counts_the_prompt_the_same_on_both_routes(gw: Gateway, route: str) -> None:
    body = chat(gw, route)
    student = chat(gw, "student")
    assert body["usage"]["prompt_tokens"] == student["usage"]["prompt_tokens"]
    r = post(gw, "chat/completions", route, model="banking77", messages=[_user()])
    teacher_usage = r.headers.get("x-distillgate-teacher-usage")
    assert (teacher_usage is not None) == (route == "teacher")
    if teacher_usage is not None:  # the teacher's own prompt lists the task's answers
        assert int(teacher_usage.split(",")[0].split("=")[1]) > body["usage"]["prompt_tokens"]


@pytest.mark.parametrize("route", ROUTES)
def test_streams_serve_the_same_answer_as_whole_responses(gw: Gateway, route: str) -> None:
    for options in ({}, {"max_tokens": 1}, {"stop": ["_"]}, {"logprobs": True, "top_logprobs": 1}):
        whole = chat(gw, route, **options)
        events = chunks(
            gw, "chat/completions", route, model="banking77", messages=[_user()], **options
        )
        assert streamed_text(events) == whole["choices"][0]["message"]["content"]
        assert finish_of(events) == whole["choices"][0]["finish_reason"]
        assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
        for e in events:
            for c in e["choices"]:
                if c["finish_reason"] is None and c["delta"].get("content"):
                    if options.get("logprobs"):  # each content chunk carries its tokens
                        tokens = "".join(t["token"] for t in c["logprobs"]["content"])
                        assert tokens == c["delta"]["content"]
                else:  # never an empty delta carrying a token
                    assert c["logprobs"] is None


@pytest.mark.parametrize("route", ROUTES)
def test_legacy_completions_honour_the_same_options(gw: Gateway, route: str) -> None:
    prompt = "<|user|>I still have not received my card<|assistant|>"

    def complete(**kw: Any) -> dict[str, Any]:
        r = post(gw, "completions", route, model="banking77", prompt=prompt, **kw)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        validate(body, "CreateCompletionResponse")
        return body

    full = complete()["choices"][0]["text"]
    cut = complete(max_tokens=1)
    assert cut["choices"][0]["finish_reason"] == "length"
    assert full.startswith(cut["choices"][0]["text"]) and cut["usage"]["completion_tokens"] == 1
    stopped = complete(stop="_")["choices"][0]
    assert stopped["text"] == full.split("_")[0] and stopped["finish_reason"] == "stop"
    scored = complete(logprobs=2)["choices"][0]
    assert "".join(scored["logprobs"]["tokens"]) == full
    assert not any(t.startswith("<|") for t in scored["logprobs"]["tokens"])
    events = chunks(gw, "completions", route, model="banking77", prompt=prompt, max_tokens=1)
    assert streamed_text(events, chat_api=False) == cut["choices"][0]["text"]
    assert finish_of(events) == "length"
    assert all("usage" not in e for e in events if e["choices"])  # OpenAI's legacy chunks
    assert events[-1]["usage"] == cut["usage"]


def test_response_format_other_than_text_is_a_clear_400(gw: Gateway) -> None:
    client = gw.client()
    for fmt in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x"}}):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="banking77",
                messages=[_user()],
                response_format=fmt,  # type: ignore[arg-type]
            )
        assert info.value.body["param"] == "response_format"  # type: ignore[index]
        validate({"error": info.value.body}, "ErrorResponse")

    class Intent(pydantic.BaseModel):
        intent: str

    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.parse(model="banking77", messages=[_user()], response_format=Intent)


def test_errors_and_models_have_openai_shapes(gw: Gateway) -> None:
    for r in (
        post(gw, "chat/completions", None, model="banking77", messages=[]),
        post(gw, "chat/completions", None, model="nope", messages=[_user()]),
        httpx.get(f"{gw.url}/v1/nowhere"),
    ):
        assert r.status_code in (400, 404)
        validate(r.json(), "ErrorResponse")
    validate(httpx.get(f"{gw.url}/v1/models").json(), "ListModelsResponse")
