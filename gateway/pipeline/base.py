"""What the pipeline produces, and the observer it reports to.

``Answer`` is the pipeline's one result, immutable: what is served (within the client's
options) beside what the decision saw. ``PipelineObserver`` is how metrics watch the data
path without the pipeline knowing about Prometheus (``gateway/metrics/series.py`` implements it;
``NullObserver`` is for offline replays and tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.engines.base import TokenDelta
from gateway.pipeline.decision import Reason, Route

__all__ = ["Answer", "NullObserver", "Observers", "PipelineObserver"]


@dataclass(frozen=True)
class Answer:
    """What is served (``text``, ``tokens``, ``finish_reason``, within the client's limits)
    and what the decision saw (the student's whole answer, ``student_text``/``deltas``)."""

    route: Route
    reason: Reason
    text: str
    tokens: tuple[TokenDelta, ...] | None  # the served text's tokens; None: not known
    finish_reason: str
    confidence: float
    raw_confidence: float
    student_text: str
    deltas: list[TokenDelta]  # the student's own tokens, end token included
    prompt_tokens: int  # the client's prompt as the student reads it, on every route
    completion_tokens: int
    teacher_model: str | None = None
    teacher_error: str | None = None
    teacher_usage: tuple[int, int] | None = None  # the teacher's own (input, output) tokens
    teacher_saved_usd: float = 0.0  # what not calling the teacher saved (accepted, cached)
    budget_spent: str | None = None  # the spent budget that kept the teacher out, if one did
    student_latency_s: float = 0.0
    student_version: str = ""  # the version that decided (a canary's, on its share)


class PipelineObserver(Protocol):
    """Events of the data path, as they happen; ``task`` is the task's name."""

    def student_answered(self, task: str, seconds: float, confidence: float) -> None: ...

    def served(self, task: str, key: str, route: str, saved_usd: float) -> None:
        """A request answered by ``route`` for client key ``key`` ('' with no keys);
        ``saved_usd``: the teacher spend it avoided (an accepted answer at the task's mean
        teacher call so far, a cache hit at its own cost)."""

    def escalated(self, task: str, reason: str) -> None: ...

    def teacher_answered(
        self,
        task: str,
        purpose: str,
        *,
        key: str,
        seconds: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None: ...

    def teacher_failed(self, task: str, kind: str) -> None: ...

    def cache_looked_up(self, task: str, outcome: str) -> None:
        """An escalation looked its teacher answer up: ``hit``, ``miss`` or ``unavailable``."""

    def budget_refused(self, budget: str, purpose: str) -> None:
        """A teacher call for ``purpose`` was not made: ``budget`` (its label) is spent."""

    def decided(self, task: str, version: str, accepted: bool) -> None:
        """The version that decided (a canary's on its share) accepted or escalated."""

    def audited(self, task: str, version: str, agreed: bool) -> None:
        """An audit of ``version``'s accepted answer came back."""

    def judged(self, task: str, outcome: str, cost_usd: float) -> None:
        """A free-text task's judge gave its verdict on an answer (``accepted``,
        ``rejected``) or gave none (``failed``: the answer is not counted as acceptable)."""


class NullObserver:
    """Watches nothing: offline replays (``evaluate``) and tests."""

    def student_answered(self, task: str, seconds: float, confidence: float) -> None:
        pass

    def served(self, task: str, key: str, route: str, saved_usd: float) -> None:
        pass

    def escalated(self, task: str, reason: str) -> None:
        pass

    def teacher_answered(
        self,
        task: str,
        purpose: str,
        *,
        key: str,
        seconds: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        pass

    def teacher_failed(self, task: str, kind: str) -> None:
        pass

    def cache_looked_up(self, task: str, outcome: str) -> None:
        pass

    def budget_refused(self, budget: str, purpose: str) -> None:
        pass

    def decided(self, task: str, version: str, accepted: bool) -> None:
        pass

    def audited(self, task: str, version: str, agreed: bool) -> None:
        pass

    def judged(self, task: str, outcome: str, cost_usd: float) -> None:
        pass


class Observers:
    """Several observers as one: the metrics and the usage ledger see the same events."""

    def __init__(self, *observers: PipelineObserver) -> None:
        self.observers = observers

    def student_answered(self, task: str, seconds: float, confidence: float) -> None:
        for o in self.observers:
            o.student_answered(task, seconds, confidence)

    def served(self, task: str, key: str, route: str, saved_usd: float) -> None:
        for o in self.observers:
            o.served(task, key, route, saved_usd)

    def escalated(self, task: str, reason: str) -> None:
        for o in self.observers:
            o.escalated(task, reason)

    def teacher_answered(
        self,
        task: str,
        purpose: str,
        *,
        key: str,
        seconds: float,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> None:
        for o in self.observers:
            o.teacher_answered(
                task,
                purpose,
                key=key,
                seconds=seconds,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost_usd,
            )

    def teacher_failed(self, task: str, kind: str) -> None:
        for o in self.observers:
            o.teacher_failed(task, kind)

    def cache_looked_up(self, task: str, outcome: str) -> None:
        for o in self.observers:
            o.cache_looked_up(task, outcome)

    def budget_refused(self, budget: str, purpose: str) -> None:
        for o in self.observers:
            o.budget_refused(budget, purpose)

    def decided(self, task: str, version: str, accepted: bool) -> None:
        for o in self.observers:
            o.decided(task, version, accepted)

    def audited(self, task: str, version: str, agreed: bool) -> None:
        for o in self.observers:
            o.audited(task, version, agreed)

    def judged(self, task: str, outcome: str, cost_usd: float) -> None:
        for o in self.observers:
            o.judged(task, outcome, cost_usd)
