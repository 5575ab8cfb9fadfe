"""Clients nobody here wrote, LangChain and litellm, behave the same on both routes.

Both are built on the official ``openai`` SDK; each once failed on a teacher answer (litellm
on ``logprobs: null``). The same request with ``max_tokens``, ``stop`` and ``logprobs`` is
sent with the route forced to the student and to the teacher (the simulator, over real
HTTP), and must come back with the same shape and meaning.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import LABELS, Gateway, serve_in_thread, write_calibrator, write_task

PROMPT = "I still have not received my card"
KEY_ENV = "DISTILLGATE_CLIENTS_TEACHER_KEY"
ROUTES = ["student", "teacher"]


@pytest.fixture(scope="module")
def gw(tiny_student, run_gateway, tmp_path_factory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    served = serve_in_thread(
        create_sim_app(SimulatedAnswers({PROMPT: "Refund_not_showing_up"}, LABELS))
    )
    tasks = tmp_path_factory.mktemp("client-tasks")
    calibrator = write_calibrator(tasks / "c.json", tiny_student.path)
    teacher = f'[teacher]\nbase_url = "{served.url}"\napi_key_env = "{KEY_ENV}"\n'
    write_task(tasks, tiny_student.path, extra=f'calibrator = "{calibrator}"\n{teacher}')
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "test-key")
    yield run_gateway(Settings(tasks_dir=tasks, allow_force_route=True))
    mp.undo()
    served.stop()


def _check(text: str, tokens: list[str], finish: str | None) -> None:
    assert "_" not in text  # the stop sequence is honoured and never included
    assert finish == "stop"
    assert "".join(tokens) == text  # the logprobs spell the reply, with no end token


@pytest.mark.parametrize("route", ROUTES)
def test_langchain_chat_openai(gw: Gateway, route: str) -> None:
    from langchain_openai import ChatOpenAI

    def llm(**kw: Any) -> Any:
        return ChatOpenAI(
            model="banking77",
            base_url=f"{gw.url}/v1",
            api_key="unused",  # type: ignore[arg-type]
            max_retries=0,
            default_headers={"x-distillgate-force-route": route},
            **kw,
        )

    message = llm(stop=["_"], logprobs=True).invoke(PROMPT)
    meta = message.response_metadata
    _check(
        str(message.content),
        [t["token"] for t in meta["logprobs"]["content"]],
        meta["finish_reason"],
    )
    short = llm(max_tokens=1).invoke(PROMPT)
    assert short.response_metadata["finish_reason"] == "length"
    assert short.usage_metadata is not None and short.usage_metadata["output_tokens"] == 1


@pytest.mark.parametrize("route", ROUTES)
def test_litellm_completion(gw: Gateway, route: str) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network here
    import litellm

    def call(**kw: Any) -> Any:
        return litellm.completion(
            model="openai/banking77",
            api_base=f"{gw.url}/v1",
            api_key="unused",
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"x-distillgate-force-route": route},
            num_retries=0,
            **kw,
        )

    reply = call(stop=["_"], logprobs=True, top_logprobs=1)
    choice = reply.choices[0]
    _check(choice.message.content, [t.token for t in choice.logprobs.content], choice.finish_reason)
    assert all(len(t.top_logprobs) == 1 for t in choice.logprobs.content)
    short = call(max_tokens=1)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 1


def test_langchain_structured_output_fails_clearly(gw: Gateway) -> None:
    """A task without an answer schema refuses structured output with a 400 naming
    ``response_format``, instead of a parse failure inside the client."""
    import openai
    import pydantic
    from langchain_openai import ChatOpenAI

    class Intent(pydantic.BaseModel):
        intent: str

    llm = ChatOpenAI(
        model="banking77",
        base_url=f"{gw.url}/v1",
        api_key="unused",
        max_retries=0,  # type: ignore[arg-type]
    )
    for method in ("json_schema", "json_mode"):
        with pytest.raises(openai.BadRequestError, match="response_format"):
            llm.with_structured_output(Intent, method=method).invoke(PROMPT)  # type: ignore[arg-type]
