"""The trainer's output is a real Hugging Face folder that learned the task."""

from __future__ import annotations

import asyncio
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.engines.transformers import TransformersEngine
from gateway.training.trainer import TrainConfig, _lr_factor, encode, exact_match


def test_the_folder_loads_in_transformers(tiny_student) -> None:  # type: ignore[no-untyped-def]
    names = {p.name for p in tiny_student.path.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    } <= names
    config = json.loads((tiny_student.path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    tok = AutoTokenizer.from_pretrained(tiny_student.path)
    assert tok.chat_template and tok.eos_token == "<|end|>"


def test_it_learned_and_teacher_forcing_equals_greedy_decoding(tiny_student) -> None:  # type: ignore[no-untyped-def]
    tok = AutoTokenizer.from_pretrained(tiny_student.path)
    model = AutoModelForCausalLM.from_pretrained(tiny_student.path)
    forced = exact_match(model, tok, encode(tiny_student.test, tok), max_prompt_tokens=64)
    assert forced >= 0.6  # four intents: chance is 0.25

    async def greedy() -> float:
        engine = TransformersEngine(tiny_student.path)
        await engine.start()

        async def one(i: int) -> bool:
            ex = tiny_student.test[i]
            req = GenerationRequest(
                f"g{i}", SamplingParams(max_tokens=24), messages=(Message("user", ex.prompt),)
            )
            return "".join([d.text async for d in engine.generate(req)]) == ex.answer

        try:
            hits = await asyncio.gather(*(one(i) for i in range(len(tiny_student.test))))
        finally:
            await engine.aclose()
        return sum(hits) / len(hits)

    assert asyncio.run(greedy()) == pytest.approx(forced)


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    cfg = TrainConfig(warmup_fraction=0.1, final_lr_fraction=0.05)
    assert _lr_factor(0.05, cfg) == pytest.approx(0.5)
    assert _lr_factor(0.1, cfg) == pytest.approx(1.0)
    assert _lr_factor(1.0, cfg) == pytest.approx(0.05)
    values = [_lr_factor(p / 100, cfg) for p in range(10, 101)]
    assert values == sorted(values, reverse=True)
