"""The trainer's output is a real Hugging Face folder that learned the task."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.engines.transformers import TransformersEngine
from gateway.examples import Example
from gateway.training.trainer import (
    TrainConfig,
    copied_words,
    drop_words,
    encode,
    exact_match,
    lr_factor,
)


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
    assert lr_factor(0.05, cfg.warmup_fraction, cfg.final_lr_fraction) == pytest.approx(0.5)
    assert lr_factor(0.1, cfg.warmup_fraction, cfg.final_lr_fraction) == pytest.approx(1.0)
    assert lr_factor(1.0, cfg.warmup_fraction, cfg.final_lr_fraction) == pytest.approx(0.05)
    values = [
        lr_factor(p / 100, cfg.warmup_fraction, cfg.final_lr_fraction) for p in range(10, 101)
    ]
    assert values == sorted(values, reverse=True)


def test_word_dropout_never_drops_a_word_the_answer_copies(tiny_student) -> None:  # type: ignore[no-untyped-def]
    text = "play Bohemian Rhapsody by Queen, please"
    answer = '{"intent": "PlayMusic", "slots": {"track": "Bohemian Rhapsody", "artist": "Queen"}}'
    assert copied_words(text, answer) == {"Bohemian", "Rhapsody", "Queen,"}
    assert copied_words("what is my card_arrival", "card_arrival") == {"card_arrival"}
    assert copied_words("where is my card", "card_arrival") == frozenset()

    tok = AutoTokenizer.from_pretrained(tiny_student.path)
    (encoded,) = encode([Example(answer=answer, prompt=text)], tok)
    assert encoded.copied == copied_words(text, answer)
    rng = random.Random(0)
    # Every other word goes at p = 1; what the answer copies stays, in order.
    assert drop_words(text, 1.0, rng, encoded.copied) == "Bohemian Rhapsody Queen,"
    thinned = {drop_words(text, 0.5, rng, encoded.copied) for _ in range(200)}
    assert len(thinned) > 4 and all("Bohemian Rhapsody" in t and "Queen," in t for t in thinned)
