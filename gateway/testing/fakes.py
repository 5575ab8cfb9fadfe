"""``StudentEngine``, ``Teacher``, ``CaptureSink`` and ``TeacherCache`` fakes: scripted
answers, no I/O.

``FakeEngine`` answers each prompt with a scripted text and per-token probabilities (its
"tokenizer" splits on ``_``-joined pieces), ends with an end token, and scores any text by
the same split, so the pipeline's logic is exercised exactly as with a real engine.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from gateway.capture import CaptureRecord
from gateway.engines.base import GenerationRequest, ScoredText, TokenDelta
from gateway.errors import CaptureError, EngineUnavailable, TeacherError
from gateway.teachers.base import TeacherAnswer, TeacherRequest
from gateway.teachers.cache import CacheUnavailable

__all__ = ["FakeEngine", "FakeTeacher", "MemorySink", "MemoryTeacherCache", "split_pieces"]


def split_pieces(text: str) -> list[str]:
    """The fake tokenizer: ``card_arrival`` -> ``card``, ``_``, ``arrival``."""
    pieces: list[str] = []
    for i, word in enumerate(text.split("_")):
        if i:
            pieces.append("_")
        if word:
            pieces.append(word)
    return pieces


def _prompt_of(request: GenerationRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    return next(m.content for m in reversed(request.messages) if m.role == "user")


@dataclass
class FakeEngine:
    """``answers``: prompt -> (text, probability of each token). Unknown prompts get
    ``default``. ``fail`` makes every generation raise ``EngineUnavailable``."""

    answers: dict[str, tuple[str, float]]
    default: tuple[str, float] = ("unknown", 0.2)
    fail: bool = False
    prompt_tokens: int = 7
    requests: list[GenerationRequest] = field(default_factory=list)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        self.requests.append(request)
        if self.fail:
            raise EngineUnavailable("the fake student is down")
        text, p = self.answers.get(_prompt_of(request), self.default)
        pieces = split_pieces(text)[: request.sampling.max_tokens]
        lp = math.log(p)
        for piece in pieces:
            yield TokenDelta(-1, piece, lp, token=piece, prompt_tokens=self.prompt_tokens)
        if len(pieces) < request.sampling.max_tokens:
            yield TokenDelta(
                -1,
                "",
                0.0,
                token="<end>",
                finish_reason="stop",
                prompt_tokens=self.prompt_tokens,
                end=True,
            )

    async def score(self, request: GenerationRequest, text: str, *, logprobs: bool) -> ScoredText:
        pieces = split_pieces(text)
        lp = math.log(0.5) if logprobs else 0.0
        return ScoredText(
            self.prompt_tokens,
            tuple(TokenDelta(-1, t, lp, token=t, prompt_tokens=self.prompt_tokens) for t in pieces),
        )

    async def abort(self, request_id: str) -> None:
        pass

    async def check_health(self) -> None:
        if self.fail:
            raise EngineUnavailable("the fake student is down")

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@dataclass
class FakeTeacher:
    """Answers every prompt with ``answer`` (within ``max_tokens`` pieces and ``stop``), or
    raises ``error`` when set."""

    answer: str
    error: TeacherError | None = None
    name: str = "fake-teacher"
    requests: list[TeacherRequest] = field(default_factory=list)

    async def complete(self, request: TeacherRequest) -> TeacherAnswer:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        text = self.answer
        for stop in request.stop:
            if stop and stop in text:
                text = text[: text.index(stop)]
        pieces = split_pieces(text)
        cut = len(pieces) > request.max_tokens
        text = "".join(pieces[: request.max_tokens])
        # Its own tokens are characters: unlike the student's pieces, as a real teacher's are.
        return TeacherAnswer(
            text, self.name, 100, len(text), 0.0, finish_reason="length" if cut else "stop"
        )

    async def aclose(self) -> None:
        pass


@dataclass
class MemorySink:
    """A ``CaptureSink`` in a list, idempotent by record id; ``down`` makes writes fail."""

    records: dict[str, CaptureRecord] = field(default_factory=dict)
    down: bool = False

    async def write(self, records: Sequence[CaptureRecord]) -> int:
        if self.down:
            raise CaptureError("the memory sink is down")
        new = [r for r in records if r.record_id not in self.records]
        self.records.update((r.record_id, r) for r in new)
        return len(new)

    async def aclose(self) -> None:
        pass


class MemoryTeacherCache:
    """``TeacherCache`` in a dict (no TTL); ``down`` makes every lookup unavailable."""

    def __init__(self, *, down: bool = False) -> None:
        self.entries: dict[tuple[str, str], TeacherAnswer] = {}
        self.down = down

    async def get(self, task: str, key: str) -> TeacherAnswer | None:
        if self.down:
            raise CacheUnavailable
        return self.entries.get((task, key))

    async def put(self, task: str, key: str, answer: TeacherAnswer, ttl_s: int) -> None:
        if not self.down:
            self.entries[(task, key)] = answer

    async def clear(self, task: str) -> None:
        self.entries = {k: v for k, v in self.entries.items() if k[0] != task}

    async def aclose(self) -> None:
        pass
