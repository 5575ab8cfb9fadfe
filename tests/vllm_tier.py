"""What the vLLM tier's tests share: the ``vllm`` mark, the reason they skip where vllm is
not installed (the main environment; CI runs them in its own, scripts/vllm_tier), and
engine arguments that fit the machine (vLLM's CPU build in CI, CUDA on a GPU)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.engines.vllm import vllm_available

__all__ = ["ON_VLLM", "engine_arguments"]

ON_VLLM = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        not vllm_available(),
        reason="vllm is not installed here; the vLLM tier runs this (scripts/vllm_tier)",
    ),
]


def engine_arguments() -> dict[str, Any]:
    """Small and eager (the tiny students need no CUDA graphs), in float32 as the embedded
    engine runs them (``auto`` would take bfloat16 where the hardware has it), so the two
    engines' answers can be compared. On a GPU the KV cache takes a share of its memory; on
    a CPU, VLLM_CPU_KVCACHE_SPACE (GiB) sizes it."""
    import torch

    gpu = {"gpu_memory_utilization": 0.3} if torch.cuda.is_available() else {}
    return {"enforce_eager": True, "max_num_seqs": 64, "dtype": "float32", **gpu}
