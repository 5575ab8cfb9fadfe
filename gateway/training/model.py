"""The student architecture: a small Llama, so the same folder loads in transformers and vLLM."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = ["StudentShape", "add_training_dropout", "new_student"]


@dataclass(frozen=True)
class StudentShape:
    """Size of the from-scratch student (defaults: 2.35M parameters, tied embeddings)."""

    hidden_size: int = 192
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 3
    max_positions: int = 256


def new_student(shape: StudentShape, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def add_training_dropout(model: LlamaForCausalLM, p: float) -> None:
    """Dropout on embeddings, attention and MLP outputs, active in ``train()`` mode only.

    Hooks rather than a forked architecture: the saved weights stay a plain Llama.
    """

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(output, p, module.training)

    model.model.embed_tokens.register_forward_hook(hook)
    for layer in model.model.layers:
        layer.self_attn.o_proj.register_forward_hook(hook)
        layer.mlp.register_forward_hook(hook)
        layer.self_attn.attention_dropout = p  # read per forward, only while training
