"""Constrained decoding in the embedded engine, on the real tiny student.

That student was trained to answer Banking77 labels and has never seen JSON: unconstrained
it writes a label; constrained by a schema it can only write JSON of that schema, whatever
the prompt, greedy or sampled.
"""

from __future__ import annotations

import asyncio
import json
import random
import string

from gateway.answers import AnswerCheck, canonical_json
from gateway.engines.base import GenerationRequest, Message, SamplingParams, TokenDelta
from gateway.engines.transformers import TransformersEngine
from gateway.errors import InvalidRequest
from tests.gateway.engines.test_transformers_engine import run_engine

SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["card_arrival", "exchange_rate", "Refund_not_showing_up"]},
        "slots": {
            "type": "object",
            "properties": {"amount": {"type": "string", "maxLength": 6}},
            "additionalProperties": False,
        },
        "urgent": {"type": "boolean"},
    },
    "required": ["intent", "slots", "urgent"],
    "additionalProperties": False,
}


def fuzzed_prompts(n: int) -> list[str]:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + string.punctuation + " éü€{}\"'\\\n"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(n)]


def test_constrained_answers_always_fit_the_schema(tiny_student) -> None:  # type: ignore[no-untyped-def]
    check = AnswerCheck(schema=SCHEMA)
    schema = canonical_json(SCHEMA)
    prompts = fuzzed_prompts(24)

    async def test(engine: TransformersEngine) -> None:
        async def one(i: int, text: str, **sampling: object) -> list[TokenDelta]:
            params = SamplingParams(**{"max_tokens": 64, **sampling})  # type: ignore[arg-type]
            request = GenerationRequest(f"r{i}", params, messages=(Message("user", text),))
            return [d async for d in engine.generate(request)]

        free = await one(-1, "where is my card")
        assert not check.valid("".join(d.text for d in free))  # it writes a label, not JSON
        runs = [
            *(one(i, p, json_schema=schema) for i, p in enumerate(prompts)),
            *(
                one(100 + i, p, json_schema=schema, temperature=1.5, seed=i)
                for i, p in enumerate(prompts)
            ),
        ]
        for deltas in await asyncio.gather(*runs):  # batched together, greedy and sampled
            text = "".join(d.text for d in deltas)
            assert deltas[-1].finish_reason == "stop", text
            assert check.valid(text), text
            assert all(d.logprob <= 0.0 for d in deltas)  # the model's own logprobs

    run_engine(tiny_student.path, test, max_batch_size=8)


def test_a_schema_the_compiler_refuses_is_a_clear_error(tiny_student) -> None:  # type: ignore[no-untyped-def]
    async def test(engine: TransformersEngine) -> None:
        params = SamplingParams(max_tokens=8, json_schema=json.dumps({"type": "no such type"}))
        request = GenerationRequest("bad", params, messages=(Message("user", "hi"),))
        try:
            _ = [d async for d in engine.generate(request)]
        except InvalidRequest as exc:
            assert "schema" in str(exc)
        else:
            raise AssertionError("an uncompilable schema was accepted")

    run_engine(tiny_student.path, test, max_batch_size=8)
