"""``ProgramJudge``: a rubric a program checks, named by import path (``module:function``).

The function takes the input and the answer and returns a ``Verdict`` (or a bool, or an
``(acceptable, reason)`` pair). It runs in the event loop: a rubric check is a few regular
expressions, microseconds; a slow one belongs in a judge model instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from gateway.judges.base import JudgeRequest, Verdict

__all__ = ["ProgramJudge", "load_function"]

Rubric = Callable[[str, str], Any]


def load_function(path: str) -> Rubric:
    """``package.module:function`` → the function; a clear ``ValueError`` otherwise."""
    module_name, sep, name = path.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"judge function {path!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"judge function {path!r}: cannot import {module_name!r}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"judge function {path!r}: {module_name!r} has no function {name!r}")
    return function  # type: ignore[no-any-return]


class ProgramJudge:
    def __init__(self, function: Rubric, name: str = "program") -> None:
        self.function = function
        self.name = name

    @classmethod
    def from_path(cls, path: str) -> ProgramJudge:
        return cls(load_function(path), name=path)

    def verdict(self, prompt: str, answer: str) -> Verdict:
        """The function's verdict, in one shape."""
        out = self.function(prompt, answer)
        if isinstance(out, Verdict):
            return out
        if isinstance(out, bool):
            return Verdict(out, "")
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], bool):
            return Verdict(out[0], str(out[1]))
        if hasattr(out, "acceptable") and hasattr(out, "reason"):
            return Verdict(bool(out.acceptable), str(out.reason))
        raise TypeError(f"judge {self.name} returned {type(out).__name__}, not a verdict")

    async def judge(self, request: JudgeRequest) -> Verdict:
        return self.verdict(request.prompt, request.answer)

    async def aclose(self) -> None:
        pass
