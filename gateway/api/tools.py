"""Tool calls as structured answers.

A structured task answers one JSON record. A client that forces one function whose
parameters are the task's schema asks for exactly that record, as the function's arguments:
it is how instructor, LangChain's ``with_structured_output(method="function_calling")`` and
pydantic-ai's output tools ask for a structured answer. Any other use of tools (the choice
left to the model, several functions, hosted tools) is a 400 that says what is supported: a
student answers its task; it does not choose tools.

Chat completions nest a function (``{"type": "function", "function": {"name": ...}}``); the
Responses API does not (``{"type": "function", "name": ...}``). Both read the same here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.answers import fits_schema
from gateway.errors import InvalidRequest
from gateway.tasks import Task

__all__ = ["ToolCall", "forced_call"]

SUPPORTED = (
    "a task with an answer schema answers one forced function whose parameters are that "
    "schema: send that one function in tools, and tool_choice naming it (or 'required')"
)


@dataclass(frozen=True)
class ToolCall:
    """The function a request forces; the task's answer is its arguments."""

    name: str


def forced_call(
    task: Task, tools: list[Any] | None, choice: Any, *, nested: bool
) -> ToolCall | None:
    """The function the request forces, or None for a plain answer (no tools, or
    ``tool_choice: "none"``); a 400 naming the parameter for every other use of tools."""
    if choice == "none" or (not tools and choice in (None, "auto")):
        return None
    if not tools:
        raise _refusal("tool_choice", f"tool_choice {choice!r} needs tools; {SUPPORTED}.")
    functions = [_function(tool, index, nested) for index, tool in enumerate(tools)]
    if choice == "required":
        if len(functions) != 1:
            raise _refusal(
                "tools",
                f"tool_choice 'required' with {len(functions)} functions leaves the choice to "
                f"the model; {SUPPORTED}.",
            )
        name, parameters = functions[0]
    elif isinstance(choice, dict) and choice.get("type") == "function":
        wanted = (choice.get("function") or {}).get("name") if nested else choice.get("name")
        named = [f for f in functions if f[0] == wanted]
        if not named:
            raise _refusal("tool_choice", f"tool_choice names {wanted!r}, which is not in tools.")
        name, parameters = named[0]
    else:  # no tool_choice is "auto": the tools are what the student cannot honour
        shown = choice if isinstance(choice, str) or choice is None else choice.get("type")
        raise _refusal(
            "tools" if choice is None else "tool_choice",
            f"tool_choice {shown or 'auto'!r} leaves the choice to the model; {SUPPORTED}.",
        )
    own = task.answer_schema
    if own is None:
        raise _refusal(
            "tools",
            f"task {task.name!r} answers plain text (it declares no answer schema), so it "
            "cannot answer a function call; send no tools.",
        )
    if not fits_schema(parameters, own):
        raise InvalidRequest(
            f"the parameters of function {name!r} differ from task {task.name!r}'s answer "
            "schema; send that schema (GET /v1/models/{model} shows it) as the parameters.",
            param="tools",
            code="schema_mismatch",
        )
    return ToolCall(name)


def _function(tool: Any, index: int, nested: bool) -> tuple[str, dict[str, Any]]:
    """A function tool's name and parameters; hosted and custom tools are refused."""
    kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
    spec = (tool.get("function") if nested else tool) if kind == "function" else None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise _refusal(
            f"tools.[{index}]", f"tools of type {kind!r} are not supported; {SUPPORTED}."
        )
    parameters = spec.get("parameters")
    return spec["name"], parameters if isinstance(parameters, dict) else {}


def _refusal(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")
