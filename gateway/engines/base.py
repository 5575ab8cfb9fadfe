"""The student-engine seam: what serving needs from any engine, and the data it exchanges.

An engine takes chat messages (it applies the model's own chat template) or a raw
prompt, works on token ids, and yields one ``TokenDelta`` per generated token with the
chosen token's log-probability and the top-k alternatives: the raw material of
confidence. Engines never see wire models; ``api/protocol.py`` converts into these.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "FinishReason",
    "GenerationRequest",
    "Message",
    "Queued",
    "SamplingParams",
    "ScoredText",
    "StudentEngine",
    "TokenDelta",
    "TokenLogprob",
    "TopKScorer",
]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0  # alternatives to report per token, besides the chosen one
    # Constrained decoding: the answer must be JSON of this JSON Schema (its text, canonical).
    json_schema: str | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """Exactly one of ``messages`` (chat) and ``prompt`` (raw completion) is set.

    ``confidence_temperature``: when set, each delta also carries the chosen token's
    log-probability under softmax(z / T), the calibrated confidence's raw material.
    ``max_prompt_tokens``: a longer prompt is refused (400), not truncated.
    """

    request_id: str
    sampling: SamplingParams
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    confidence_temperature: float | None = None
    max_prompt_tokens: int | None = None

    def __post_init__(self) -> None:
        if bool(self.messages) == (self.prompt is not None):
            raise ValueError("set exactly one of messages and prompt")


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float


@dataclass(frozen=True)
class TokenDelta:
    """One generated token. ``text`` may be empty while a stop string could still match."""

    token_id: int
    text: str
    logprob: float
    top_logprobs: tuple[TokenLogprob, ...] = field(default=())
    token: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    scaled_logprob: float | None = None  # at the request's confidence_temperature
    end: bool = False  # the end token: part of the confidence, never shown to a client


@dataclass(frozen=True)
class ScoredText:
    """A text as the student's tokenizer splits it, each piece scored by the student with
    teacher forcing when asked (else its logprobs are 0.0): what a teacher's answer looks
    like in the student's tokens, so usage and logprobs mean the same on both routes.
    The pieces' ``text`` joins to the scored text exactly; no end token is included."""

    prompt_tokens: int
    tokens: tuple[TokenDelta, ...]

    @classmethod
    def of(
        cls,
        prompt_tokens: int,
        ids: Sequence[int],
        pieces: Sequence[str],
        scored: Sequence[tuple[float, Sequence[tuple[int, float]]]],
        name: Callable[[int], str],
    ) -> ScoredText:
        """From parallel lists: each id, its piece of the text, (its logprob, its top
        alternatives as (id, logprob)); ``name`` spells an alternative's id."""
        return cls(
            prompt_tokens,
            tuple(
                TokenDelta(
                    token_id=token_id,
                    text=piece,
                    token=piece,
                    logprob=logprob,
                    top_logprobs=tuple(TokenLogprob(t, name(t), lp) for t, lp in top),
                    prompt_tokens=prompt_tokens,
                )
                for token_id, piece, (logprob, top) in zip(ids, pieces, scored, strict=True)
            ),
        )


@runtime_checkable
class StudentEngine(Protocol):
    """Generation with per-token logprobs; closing the iterator early aborts the request."""

    def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]: ...

    async def score(
        self, request: GenerationRequest, text: str, *, logprobs: bool
    ) -> ScoredText | None:
        """``text`` as the student would have answered ``request``: its pieces, and their
        logprobs (top-k per ``request.sampling.top_logprobs``) when ``logprobs``. None when
        the engine has no tokenizer of the student's (a remote fleet)."""
        ...

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self) -> None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class WrappedEngine:
    """An engine around another (admission, placeholders): what it does not change, it
    passes on."""

    def __init__(self, engine: StudentEngine) -> None:
        self.engine = engine

    async def score(
        self, request: GenerationRequest, text: str, *, logprobs: bool
    ) -> ScoredText | None:
        return await self.engine.score(request, text, logprobs=logprobs)

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def start(self) -> None:
        await self.engine.start()

    async def aclose(self) -> None:
        await self.engine.aclose()


@runtime_checkable
class Queued(Protocol):
    """An engine that knows its queue: requests accepted and not yet finished (metrics)."""

    @property
    def pending(self) -> int: ...


@runtime_checkable
class TopKScorer(Protocol):
    """An engine that scores answer ids with teacher forcing among the top-k alternatives
    its served confidence renormalises over (vLLM): what calibration fits T on, so the
    calibrator is fitted on the log-probabilities the engine serves with."""

    def encode(self, request: GenerationRequest) -> list[int]: ...

    def encode_answer(self, request: GenerationRequest, answer: str) -> list[int]: ...

    async def score_ids(
        self, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]
    ) -> list[list[tuple[float, list[float]]]]:
        """Per answer, per token: its logprob and the top-k logprobs at that position."""
        ...
