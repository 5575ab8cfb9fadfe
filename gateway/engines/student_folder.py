"""What a student folder is: a whole Hugging Face model, or a LoRA adapter on a base model.

The folder is the contract between training and every engine. A whole model holds
``config.json`` and its weights; an adapter (``distillgate student train --method lora``,
or any peft adapter) holds ``adapter_config.json`` and ``adapter_model.safetensors``, names
its base in ``base_model_name_or_path`` (a path relative to the adapter folder, or
absolute), and carries the tokenizer and generation config it was trained with. Engines
ask here which weights to load, which tokenizer to read and which ids end an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ADAPTER_CONFIG", "StudentFolder", "is_student", "open_student"]

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class StudentFolder:
    path: Path
    base: Path | None = None  # the base model an adapter applies to; None for a whole model

    @property
    def is_adapter(self) -> bool:
        return self.base is not None

    @property
    def weights(self) -> Path:
        """The whole model an engine loads (the base, for an adapter)."""
        return self.base or self.path

    @property
    def tokenizer(self) -> Path:
        """The adapter's own tokenizer when it saved one (the trained chat template), else
        the base's."""
        if self.base is None or (self.path / "tokenizer_config.json").is_file():
            return self.path
        return self.base

    def stop_ids(self, tokenizer: Any) -> frozenset[int]:
        """Every id that ends an answer: the tokenizer's end token and each end-of-turn id
        in the generation config (Llama 3 lists ``<|eot_id|>`` beside ``<|end_of_text|>``)."""
        ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        for folder in (self.path, self.base):
            config = folder / "generation_config.json" if folder is not None else None
            if config is not None and config.is_file():
                eos = json.loads(config.read_text()).get("eos_token_id")
                ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
                break
        return frozenset(int(i) for i in ids)

    def load_model(self, *, dtype: Any = None) -> Any:
        """The causal LM in eval mode on the CPU; an adapter is merged into its base, so a
        step costs what the merged model's does."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            self.weights, **({"dtype": dtype} if dtype is not None else {})
        )
        if self.base is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.path).merge_and_unload()
        return model.eval()


def is_student(path: Path) -> bool:
    """A folder an engine can serve (its base is checked when it is opened)."""
    return (path / "config.json").is_file() or (path / ADAPTER_CONFIG).is_file()


def open_student(path: str | Path) -> StudentFolder:
    path = Path(path)
    adapter = path / ADAPTER_CONFIG
    if adapter.is_file():
        named = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if not named:
            raise FileNotFoundError(f"{adapter} names no base model (base_model_name_or_path)")
        base = Path(named) if Path(named).is_absolute() else (path / named).resolve()
        if not (base / "config.json").is_file():
            raise FileNotFoundError(
                f"the adapter {path} applies to {base}, which is not a model folder"
            )
        return StudentFolder(path, base)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a student folder (no config.json)")
    return StudentFolder(path)
