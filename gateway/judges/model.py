"""``ModelJudge``: a judge model asked for a verdict through a teacher client (the real
Anthropic or OpenAI SDK, with the teacher's retries, deadline and circuit breaker).

The verdict comes back in a fixed structure, ``{"acceptable": bool, "reason": str}``, asked
the provider's way (Anthropic: a forced tool; OpenAI: ``response_format`` json_schema). The
question is one JSON object, ``{"input": ..., "answer": ...}``, under a system prompt that
holds the rubric. Anything but a well-formed verdict (a failure, a timeout, a malformed
reply) raises ``JudgeFailed``: a judge that did not decide never accepts an answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway.engines.base import Message
from gateway.errors import TeacherError
from gateway.judges.base import JudgeRequest, Verdict
from gateway.teachers.base import Teacher, TeacherRequest

__all__ = ["VERDICT_SCHEMA", "JudgeFailed", "ModelJudge", "judge_question", "read_question"]

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"acceptable": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["acceptable", "reason"],
    "additionalProperties": False,
}

_SYSTEM = (
    "You are a strict judge. You get an input and an answer written for it, and a rubric. "
    "Decide whether the answer meets every point of the rubric for that input. Reply with "
    "the verdict only: acceptable true or false, and the reason in one sentence (what is "
    "missing, wrong or added, or that nothing is).\n\nRubric: {rubric}"
)


class JudgeFailed(Exception):
    """The judge gave no verdict; the answer counts as not judged (never as acceptable)."""


def judge_question(prompt: str, answer: str) -> str:
    return json.dumps({"input": prompt, "answer": answer}, ensure_ascii=False)


def read_question(text: str) -> tuple[str, str] | None:
    """``judge_question``'s input and answer back, or None for any other text."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or set(value) != {"input", "answer"}:
        return None
    prompt, answer = value["input"], value["answer"]
    return (prompt, answer) if isinstance(prompt, str) and isinstance(answer, str) else None


class ModelJudge:
    def __init__(
        self,
        client: Teacher,
        *,
        max_tokens: int = 256,
        name: str = "",
        price: Callable[[int, int], float] | None = None,
    ) -> None:
        """``price``: USD for a call's (input, output) tokens; without it, calls cost 0."""
        self.client = client
        self.max_tokens = max_tokens
        self.name = name or client.name
        self.price = price

    async def judge(self, request: JudgeRequest) -> Verdict:
        ask = TeacherRequest(
            request_id="judge",
            messages=(Message("user", judge_question(request.prompt, request.answer)),),
            system=_SYSTEM.format(rubric=request.rubric),
            max_tokens=self.max_tokens,
            json_schema=VERDICT_SCHEMA,
        )
        try:
            reply = await self.client.complete(ask)
        except TeacherError as exc:
            raise JudgeFailed(f"{self.name}: {exc.message}") from None
        try:
            value = json.loads(reply.text)
        except ValueError:
            raise JudgeFailed(f"{self.name} answered no verdict: {reply.text[:80]!r}") from None
        acceptable = value.get("acceptable") if isinstance(value, dict) else None
        if not isinstance(acceptable, bool):
            raise JudgeFailed(f"{self.name} answered no verdict: {reply.text[:80]!r}")
        cost = self.price(reply.input_tokens, reply.output_tokens) if self.price else 0.0
        return Verdict(acceptable, str(value.get("reason", "")), cost)

    async def aclose(self) -> None:
        await self.client.aclose()
