"""The clients teams use for structured answers work unmodified, on both routes.

Each asks a structured task in its own default way (instructor and LangChain's
``function_calling`` force a function; LangChain's ``json_schema``, the openai SDK's
``parse`` and the OpenAI Agents SDK send a JSON schema; pydantic-ai uses an output tool), over
chat completions or the Responses API, whole and streamed, with the route forced to the
student (the tiny student, constrained by the task's schema) and to the teacher (the
simulator, behind the Anthropic SDK). Each must hand back the client's own pydantic object.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import openai
import pydantic
import pytest
from typing_extensions import TypedDict

from tests.conftest import Gateway
from tests.gateway.test_tool_calls import (
    COMMAND_PROMPT,
    COMMAND_TEACHER_SAYS,
    INTENTS,
    PROMPT,
    TEACHER_SAYS,
    Ticket,
)
from tests.gateway.test_tool_calls import structured as structured_gateway  # noqa: F401

ROUTES = ["student", "teacher"]
STREAMED = [False, True]


@pytest.fixture(scope="module")
def gw(structured_gateway: Gateway) -> Gateway:  # noqa: F811
    return structured_gateway


Slot = Annotated[str, pydantic.StringConstraints(max_length=16)]


class Slots(TypedDict, total=False):
    artist: Slot
    playlist: Slot


class Command(pydantic.BaseModel):
    """A voice command: its intent and slots (the ``commands`` task's schema)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    intent: Literal[INTENTS]  # type: ignore[valid-type]
    slots: Slots


def headers(route: str) -> dict[str, str]:
    return {"x-distillgate-force-route": route}


def sync_client(gw: Gateway, route: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, default_headers=headers(route)
    )


def async_client(gw: Gateway, route: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, default_headers=headers(route)
    )


def check_ticket(ticket: Any, route: str) -> None:
    assert isinstance(ticket, Ticket), ticket
    if route == "teacher":  # the teacher's known answer, through the client's own parsing
        assert ticket.model_dump() == TEACHER_SAYS


@pytest.mark.parametrize("streamed", STREAMED)
@pytest.mark.parametrize("route", ROUTES)
def test_instructor_in_its_default_mode(gw: Gateway, route: str, streamed: bool) -> None:
    import instructor

    client = instructor.from_openai(sync_client(gw, route))
    assert client.mode == instructor.Mode.TOOLS  # a forced function, instructor's default
    ask = {
        "model": "tickets",
        "response_model": Ticket,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_retries": 0,
    }
    if streamed:
        partials = list(client.chat.completions.create_partial(**ask))
        assert len(partials) > 1 or route == "teacher"  # filled in as the deltas arrive
        ticket = Ticket.model_validate(partials[-1].model_dump())
    else:
        ticket = client.chat.completions.create(**ask)
    check_ticket(ticket, route)


@pytest.mark.parametrize("streamed", STREAMED)
@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
@pytest.mark.parametrize("route", ROUTES)
def test_langchain_with_structured_output(
    gw: Gateway, route: str, method: str, streamed: bool
) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="tickets",
        base_url=f"{gw.url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        max_retries=0,
        default_headers=headers(route),
    )
    chain = llm.with_structured_output(Ticket, method=method)  # type: ignore[arg-type]
    if streamed:
        *_, ticket = chain.stream(PROMPT)
    else:
        ticket = chain.invoke(PROMPT)
    check_ticket(ticket, route)


@pytest.mark.parametrize("streamed", STREAMED)
@pytest.mark.parametrize("route", ROUTES)
def test_openai_sdk_parse(gw: Gateway, route: str, streamed: bool) -> None:
    """``responses.parse`` (a JSON schema) and ``chat.completions.parse`` with a strict
    function tool, the SDK's two ways to a pydantic object."""
    client = sync_client(gw, route)
    tool = openai.pydantic_function_tool(Ticket)
    messages = [{"role": "user", "content": PROMPT}]
    choice = {"type": "function", "function": {"name": "Ticket"}}
    if streamed:
        with client.responses.stream(model="tickets", input=PROMPT, text_format=Ticket) as s:
            response = s.get_final_response()
        with client.chat.completions.stream(
            model="tickets",
            messages=messages,
            tools=[tool],
            tool_choice=choice,  # type: ignore[arg-type]
        ) as c:
            completion = c.get_final_completion()
    else:
        response = client.responses.parse(model="tickets", input=PROMPT, text_format=Ticket)
        completion = client.chat.completions.parse(
            model="tickets",
            messages=messages,
            tools=[tool],
            tool_choice=choice,  # type: ignore[arg-type]
        )
    check_ticket(response.output_parsed, route)
    (call,) = completion.choices[0].message.tool_calls or ()
    check_ticket(call.function.parsed_arguments, route)  # type: ignore[union-attr]


@pytest.mark.parametrize("streamed", STREAMED)
@pytest.mark.parametrize("route", ROUTES)
def test_openai_agents_sdk_on_its_default_responses_model(
    gw: Gateway, route: str, streamed: bool
) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # the SDK's own traces go to OpenAI's servers
    agent = Agent(
        name="support",
        instructions="Classify the customer's message.",
        model=OpenAIResponsesModel(model="tickets", openai_client=async_client(gw, route)),
        output_type=Ticket,
    )

    async def run() -> Any:
        if not streamed:
            return (await Runner.run(agent, PROMPT)).final_output
        result = Runner.run_streamed(agent, PROMPT)
        kinds = {event.type async for event in result.stream_events()}
        assert "raw_response_event" in kinds
        return result.final_output

    check_ticket(asyncio.run(run()), route)


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("streamed", STREAMED)
@pytest.mark.parametrize("route", ROUTES)
def test_pydantic_ai_structured_output(gw: Gateway, route: str, streamed: bool, api: str) -> None:
    """Against the SNIPS-like ``commands`` task, through pydantic-ai's output tool."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

    provider = OpenAICompatibleProvider("distillgate", openai_client=async_client(gw, route))
    kind = OpenAIChatModel if api == "chat" else OpenAIResponsesModel
    agent = Agent(kind("commands", provider=provider), output_type=Command)

    async def run() -> Any:
        if not streamed:
            return (await agent.run(COMMAND_PROMPT)).output
        async with agent.run_stream(COMMAND_PROMPT) as result:
            return await result.get_output()

    command = asyncio.run(run())
    assert isinstance(command, Command), command
    if route == "teacher":
        assert command.model_dump() == COMMAND_TEACHER_SAYS
