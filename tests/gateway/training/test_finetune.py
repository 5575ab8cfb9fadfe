"""Fine-tuning pretrained bases: GGUF import, the prompt serving reads is the prompt trained
on (ChatML with a default system prompt, Llama 3 with BOS in the template and <|eot_id|>),
LoRA that learns, and continuation from a parent adapter. Tiny bases from tests/pretrained."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gateway.engines.base import SamplingParams
from gateway.engines.student_folder import open_student
from gateway.engines.transformers import TransformersEngine
from gateway.examples import Example, read_examples
from gateway.pipeline.prompt import example_request
from gateway.tasks import PromptFormat
from gateway.training.finetune import FinetuneConfig, encode_pairs, finetune
from gateway.training.gguf import import_gguf
from tests.conftest import DATA, subset
from tests.pretrained import Style, make_base, write_gguf

STYLES: tuple[Style, ...] = ("chatml", "llama3")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [f"{e.prompt} {e.answer}" for e in read_examples(DATA / "train.jsonl")[:800]]


@pytest.fixture(scope="module", params=STYLES)
def base(request: pytest.FixtureRequest, texts: list[str], tmp_path_factory) -> tuple[Style, Path]:  # type: ignore[no-untyped-def]
    style: Style = request.param
    return style, make_base(tmp_path_factory.mktemp(f"base-{style}"), style, texts)


def _rows(folder: Path, examples: list[Example]):  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    stops = open_student(folder).stop_ids(tokenizer)
    return tokenizer, encode_pairs(
        tokenizer, examples, stops=stops, policy=PromptFormat(), max_prompt_tokens=64
    )


def test_import_gguf_keeps_the_weights_tokenizer_template_and_end_ids(
    base: tuple[Style, Path], tmp_path: Path
) -> None:
    style, folder = base
    imported = import_gguf(write_gguf(folder, tmp_path / "base.gguf"), tmp_path / "imported")
    assert imported.chat_template and imported.architecture == "LlamaForCausalLM"
    original, tokenizer = (
        AutoModelForCausalLM.from_pretrained(folder),
        AutoTokenizer.from_pretrained(folder),
    )
    copy, copied = (
        AutoModelForCausalLM.from_pretrained(imported.out),
        AutoTokenizer.from_pretrained(imported.out),
    )
    chat = [{"role": "user", "content": "My card still has not arrived, what now?"}]
    ids = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert (
        copied.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        == ids
    )
    with torch.no_grad():
        x = torch.tensor([ids])
        assert torch.allclose(original(x).logits, copy(x).logits, atol=1e-5)
    ends = json.loads((imported.out / "generation_config.json").read_text())["eos_token_id"]
    if style == "llama3":  # <|eot_id|> ends a turn beside <|end_of_text|>
        assert sorted(ends) == sorted(
            tokenizer.convert_tokens_to_ids(["<|end_of_text|>", "<|eot_id|>"])
        )
    assert open_student(imported.out).stop_ids(copied) == open_student(folder).stop_ids(tokenizer)


def test_training_and_serving_prompt_ids_are_equal(
    base: tuple[Style, Path], tmp_path: Path
) -> None:
    """The ids a student was trained on are the ids its engine builds when it is served."""
    style, folder = base
    examples = subset(DATA / "test.jsonl", 2)
    policy = (
        PromptFormat(system="Answer with the intent label.")
        if style == "llama3"
        else PromptFormat()
    )
    cfg = FinetuneConfig(max_steps=1, max_prompt_tokens=256, eval_limit=2)
    finetune(folder, examples, examples, tmp_path / "student", cfg, policy=policy)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "student")
    stops = open_student(tmp_path / "student").stop_ids(tokenizer)
    rows = encode_pairs(tokenizer, examples, stops=stops, policy=policy, max_prompt_tokens=256)
    engine = TransformersEngine(tmp_path / "student", max_batch_size=4)
    sampling = SamplingParams(max_tokens=8)
    for example, (prompt, answer) in zip(examples, rows, strict=True):
        request = example_request(policy, example, "serve", sampling)
        assert engine.encode(request) == prompt
        # Independently: the template rendered as text, then tokenized without extra specials.
        turns = [{"role": m.role, "content": m.content} for m in request.messages]
        text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == prompt
        assert tokenizer.decode(answer[:-1]) == example.answer
        if style == "chatml":
            assert "You are a helpful assistant." in tokenizer.decode(prompt)  # the default system
            assert answer[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        else:
            assert prompt.count(tokenizer.bos_token_id) == 1 and prompt[0] == tokenizer.bos_token_id
            assert "Answer with the intent label." in tokenizer.decode(prompt)
            assert answer[-1] == tokenizer.convert_tokens_to_ids("<|eot_id|>")
    if style == "llama3":
        assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in engine._eos


def test_a_memorised_answer_is_served_token_for_token(
    base: tuple[Style, Path], tmp_path: Path
) -> None:
    """Train every weight of the tiny base until it knows six answers; the engine must then
    generate exactly the trained answer ids, end id included, and stop there."""
    _, folder = base
    examples = subset(DATA / "test.jsonl", 1)[:6]
    cfg = FinetuneConfig(
        method="full", lr=3e-3, batch_size=6, max_steps=120, eval_limit=6, eval_every_s=1e9
    )
    result = finetune(folder, examples, examples, tmp_path / "full", cfg)
    assert result.best_eval_accuracy == 1.0
    _, rows = _rows(tmp_path / "full", examples)

    async def served() -> list[tuple[list[int], str, str | None]]:
        engine = TransformersEngine(tmp_path / "full", max_batch_size=8)
        await engine.start()
        out = []
        try:
            for example in examples:
                request = example_request(
                    PromptFormat(), example, f"r-{example.answer}", SamplingParams(max_tokens=16)
                )
                ids, text, finish = [], "", None
                async for delta in engine.generate(request):
                    ids.append(delta.token_id)
                    text += delta.text
                    finish = delta.finish_reason
                out.append((ids, text, finish))
        finally:
            await engine.aclose()
        return out

    for (ids, text, finish), example, (_, answer) in zip(
        asyncio.run(served()), examples, rows, strict=True
    ):
        assert ids == answer and finish == "stop"
        assert text == example.answer


def test_lora_lowers_held_out_loss_and_saves_an_adapter_naming_its_base(
    base: tuple[Style, Path], tmp_path: Path
) -> None:
    _, folder = base
    train, held_out = subset(DATA / "train.jsonl", 6), subset(DATA / "test.jsonl", 3)
    cfg = FinetuneConfig(lora_rank=8, lr=5e-3, batch_size=16, max_steps=40, eval_every_s=1e9)
    result = finetune(folder, train, held_out, tmp_path / "adapter", cfg)
    assert result.best_eval_loss < 0.9 * result.first_eval_loss
    assert 0 < result.trainable < result.parameters / 2
    student = open_student(tmp_path / "adapter")
    assert student.is_adapter and student.base == folder.resolve()
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert not Path(config["base_model_name_or_path"]).is_absolute()  # the folders move together
    assert not (tmp_path / "adapter" / "model.safetensors").exists()

    # Continued from that adapter, a second run starts where the first ended, never worse.
    more = finetune(folder, train, held_out, tmp_path / "next", cfg, init_from=tmp_path / "adapter")
    assert more.first_eval_loss == pytest.approx(result.best_eval_loss, rel=1e-4)
    assert more.best_eval_loss <= more.first_eval_loss
