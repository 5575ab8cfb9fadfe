"""Which tool uses a student can honour: one forced function whose parameters are the
task's schema, in either API's shape; everything else a 400 naming the parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.api.tools import ToolCall, forced_call
from gateway.errors import InvalidRequest
from gateway.tasks import Task

SCHEMA = {
    "type": "object",
    "properties": {"intent": {"enum": ["a", "b"]}},
    "required": ["intent"],
    "additionalProperties": False,
}
TASK = Task(name="t", student=Path("s"), answer_schema=SCHEMA)


def chat_tool(name: str = "f", parameters: Any = SCHEMA) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def responses_tool(name: str = "f", parameters: Any = SCHEMA) -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": parameters, "strict": True}


def test_a_forced_function_in_either_shape() -> None:
    named = {"type": "function", "function": {"name": "f"}}
    assert forced_call(TASK, [chat_tool()], named, nested=True) == ToolCall("f")
    assert forced_call(TASK, [chat_tool()], "required", nested=True) == ToolCall("f")
    flat = {"type": "function", "name": "g"}
    tools = [responses_tool(), responses_tool("g")]
    assert forced_call(TASK, tools, flat, nested=False) == ToolCall("g")


def test_no_tools_or_none_is_a_plain_answer() -> None:
    for tools, choice in ((None, None), ([], "auto"), ([chat_tool()], "none"), ([], "none")):
        assert forced_call(TASK, tools, choice, nested=True) is None


@pytest.mark.parametrize(
    ("tools", "choice", "param"),
    [
        ([chat_tool()], None, "tools"),
        ([chat_tool()], "auto", "tool_choice"),
        (None, "required", "tool_choice"),
        ([chat_tool(), chat_tool("g")], "required", "tools"),
        ([chat_tool()], {"type": "function", "function": {"name": "g"}}, "tool_choice"),
        ([chat_tool()], {"type": "allowed_tools"}, "tool_choice"),
        ([{"type": "custom", "custom": {"name": "c"}}], "required", "tools.[0]"),
        (["not a tool"], "required", "tools.[0]"),
        ([chat_tool(parameters={"type": "object"})], "required", "tools"),
    ],
)
def test_what_a_student_cannot_honour(tools: Any, choice: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        forced_call(TASK, tools, choice, nested=True)
    assert info.value.param == param
    assert "tool" in info.value.message or "function" in info.value.message


def test_a_plain_text_task_answers_no_call() -> None:
    plain = Task(name="p", student=Path("s"))
    with pytest.raises(InvalidRequest, match="plain text"):
        forced_call(plain, [chat_tool()], "required", nested=True)
