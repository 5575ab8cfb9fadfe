"""Values the student copies from its input, masked: it reads and writes a placeholder, and
the engine puts the value back.

A small student trained from scratch does not learn to copy a name it has seen a few times
("The Eagle", "Raja Indian Cuisine"): it writes another one it knows. The usual remedy for
data-to-text tasks (delexicalisation) is to replace such values by a placeholder in the
input and in the answer when training, and to restore them in what the student writes.
A task names each placeholder and the pattern that finds its value in the input (one
capture group): ``{"X-NAME" = 'name\\[([^\\]]+)\\]'}``. Training masks the pairs and saves the
placeholders in the student folder (``placeholders.json``); every engine that opens the
folder wraps itself in ``PlaceholderEngine``, so serving, calibration, evaluation and the
loop's gate all see the student's answers with the values restored, and the client never
sees a placeholder it has a value for.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Protocol, runtime_checkable

from gateway.engines.base import (
    GenerationRequest,
    Message,
    ScoredText,
    StudentEngine,
    TokenDelta,
    WrappedEngine,
)
from gateway.examples import Example

__all__ = ["FILE", "PlaceholderEngine", "Placeholders", "read_placeholders"]

FILE = "placeholders.json"


@dataclasses.dataclass(frozen=True)
class Placeholders:
    """``patterns``: placeholder → the pattern whose first group is its value in the input."""

    patterns: Mapping[str, str]

    def __post_init__(self) -> None:
        for name, pattern in self.patterns.items():
            if not name or any(name in other for other in self.patterns if other != name):
                raise ValueError(f"placeholder {name!r}: empty, or part of another one")
            if re.compile(pattern).groups != 1:
                raise ValueError(f"placeholder {name!r}: its pattern needs one capture group")

    def mask_input(self, text: str) -> tuple[str, dict[str, str]]:
        """The input with each value found replaced by its placeholder, and the values."""
        values: dict[str, str] = {}
        for name, pattern in self.patterns.items():
            found = re.search(pattern, text)
            if found is not None and found.group(1):
                values[name] = found.group(1)
                text = text[: found.start(1)] + name + text[found.end(1) :]
        return text, values

    @staticmethod
    def mask_answer(answer: str, values: Mapping[str, str]) -> str:
        """Each value in the answer (any case; a leading "The" optional) as its
        placeholder: what the student is taught to write."""
        for name, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
            forms = [value, *([value[4:]] if value.lower().startswith("the ") else [])]
            for form in forms:
                answer = re.sub(rf"(?<!\w){re.escape(form)}(?!\w)", name, answer, flags=re.I)
        return answer

    @staticmethod
    def restore(text: str, values: Mapping[str, str]) -> str:
        for name, value in values.items():
            text = text.replace(name, value)
        return text

    def held_back(self, text: str) -> int:
        """How many characters at the end of ``text`` might begin a placeholder: held until
        the next piece says whether they do."""
        longest = max(map(len, self.patterns), default=0)
        for n in range(min(len(text), longest - 1), 0, -1):
            if any(name.startswith(text[-n:]) for name in self.patterns):
                return n
        return 0

    def mask_example(self, example: Example) -> Example:
        """A training pair as the student reads and writes it."""
        if example.messages:
            messages = [dict(m) for m in example.messages]
            users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
            if not users:
                return example
            content, values = self.mask_input(messages[users[-1]]["content"])
            messages[users[-1]]["content"] = content
            return dataclasses.replace(
                example,
                messages=tuple(messages),
                answer=self.mask_answer(example.answer, values),
            )
        prompt, values = self.mask_input(example.prompt or "")
        return dataclasses.replace(
            example, prompt=prompt, answer=self.mask_answer(example.answer, values)
        )

    def save(self, folder: Path) -> None:
        (folder / FILE).write_text(json.dumps(dict(self.patterns), indent=2) + "\n")


@runtime_checkable
class _Encoder(Protocol):
    def encode(self, request: GenerationRequest) -> list[int]: ...

    def encode_answer(self, request: GenerationRequest, answer: str) -> list[int]: ...


class _Restoring:
    """Pieces of masked text in, the same pieces with the values restored out: a piece that
    might begin a placeholder is held until the next one says whether it does."""

    def __init__(self, placeholders: Placeholders, values: Mapping[str, str]) -> None:
        self.placeholders, self.values, self.pending = placeholders, values, ""

    def push(self, piece: str, *, last: bool) -> str:
        self.pending += piece
        keep = 0 if last else self.placeholders.held_back(self.pending)
        ready, self.pending = (
            self.pending[: len(self.pending) - keep],
            self.pending[len(self.pending) - keep :],
        )
        return self.placeholders.restore(ready, self.values)


def read_placeholders(folder: Path) -> Placeholders | None:
    """The placeholders a student was trained with, if any."""
    path = folder / FILE
    patterns = json.loads(path.read_text()) if path.is_file() else None
    return Placeholders(patterns) if patterns else None


class PlaceholderEngine(WrappedEngine):
    """A student engine that reads and writes placeholders, seen from outside as one that
    copies its input's values."""

    def __init__(self, engine: StudentEngine, placeholders: Placeholders) -> None:
        super().__init__(engine)
        self.placeholders = placeholders

    @property
    def pending(self) -> int:
        return int(getattr(self.engine, "pending", 0))

    def _masked(self, request: GenerationRequest) -> tuple[GenerationRequest, dict[str, str]]:
        if request.prompt is not None:
            prompt, values = self.placeholders.mask_input(request.prompt)
            return dataclasses.replace(request, prompt=prompt), values
        users = [i for i, m in enumerate(request.messages) if m.role == "user"]
        if not users:
            return request, {}
        messages = list(request.messages)
        content, values = self.placeholders.mask_input(messages[users[-1]].content)
        messages[users[-1]] = Message(messages[users[-1]].role, content)
        return dataclasses.replace(request, messages=tuple(messages)), values

    def encode(self, request: GenerationRequest) -> list[int]:
        """The prompt ids the student reads (calibration scores with them)."""
        return self._encoder().encode(self._masked(request)[0])

    def encode_answer(self, request: GenerationRequest, answer: str) -> list[int]:
        masked, values = self._masked(request)
        return self._encoder().encode_answer(masked, self.placeholders.mask_answer(answer, values))

    def _encoder(self) -> _Encoder:
        if not isinstance(self.engine, _Encoder):
            raise TypeError(f"{type(self.engine).__name__} does not encode prompts")
        return self.engine

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        masked, values = self._masked(request)
        restoring = _Restoring(self.placeholders, values)
        async with aclosing(self.engine.generate(masked)) as stream:  # closed early: aborted
            async for delta in stream:
                last = delta.finish_reason is not None or delta.end
                text = restoring.push(delta.text, last=last)
                yield dataclasses.replace(delta, text=text) if text != delta.text else delta

    async def score(
        self, request: GenerationRequest, text: str, *, logprobs: bool
    ) -> ScoredText | None:
        """``text`` as the student would write it (its values masked), its pieces spelled
        with the values restored."""
        masked, values = self._masked(request)
        scored = await self.engine.score(
            masked, self.placeholders.mask_answer(text, values), logprobs=logprobs
        )
        if scored is None or not values:
            return scored
        restoring = _Restoring(self.placeholders, values)
        last = len(scored.tokens) - 1
        tokens = tuple(
            dataclasses.replace(t, text=restoring.push(t.text, last=i == last))
            for i, t in enumerate(scored.tokens)
        )
        return dataclasses.replace(scored, tokens=tokens)
