"""Adapters on vLLM without a GPU: the engine arguments an adapter asks for, and one base
engine shared by every adapter on it, started once and shut down with its last user.
(That vLLM serves them is the vLLM tier's part: tests/test_vllm_lora.py.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.engines.vllm import SharedBases, VLLMEngine


def _adapter(root: Path, name: str, base: Path) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 16, "base_model_name_or_path": f"../{base.name}"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    return tmp_path / "base"


def test_an_adapter_runs_on_its_base_with_lora_enabled(base: Path) -> None:
    adapter = _adapter(base.parent, "banking77-v1", base)
    args = VLLMEngine(adapter, max_loras=2, max_lora_rank=32).engine_args
    assert args["model"] == str(base.resolve()) and args["enable_lora"] is True
    assert (args["max_loras"], args["max_lora_rank"]) == (2, 32)
    assert "enable_lora" not in VLLMEngine(base).engine_args


class _Base:
    """Stands in for a started VLLMEngine: counts starts and closes."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def aclose(self) -> None:
        self.log.append(f"close {self.name}")

    def served(self, student: Any) -> str:
        return f"lora {student.path.name}"


def test_adapters_on_one_base_share_one_engine_until_the_last_closes(base: Path) -> None:
    bases, log = SharedBases(), []
    settings = {"max_num_seqs": 64}
    engines = [bases.adapter(_adapter(base.parent, n, base), settings) for n in ("a", "b")]
    other = bases.adapter(_adapter(base.parent, "c", base), {"max_num_seqs": 8})
    for key in list(bases._makers):
        bases._makers[key] = lambda key=key: _Base(log, "x" if "64" in key else "y")

    async def run() -> None:
        for engine in (*engines, other):
            await engine.start()
        assert [e._served for e in engines] == ["lora a", "lora b"]
        assert log == ["start x", "start y"]  # one engine per base and settings
        await engines[0].aclose()
        assert log == ["start x", "start y"]  # b still uses it
        await engines[1].aclose()
        await other.aclose()
        assert log == ["start x", "start y", "close x", "close y"]

    asyncio.run(run())


def test_a_whole_model_is_not_an_adapter(base: Path) -> None:
    with pytest.raises(ValueError, match="not an adapter"):
        SharedBases().adapter(base, {})
