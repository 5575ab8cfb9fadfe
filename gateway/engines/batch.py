"""The running batch of a continuous-batching engine: ids, attention mask, KV cache.

Rows are left-padded so every row's newest token sits in the last column. Joining
rows pads the narrower side on the left; leaving rows are dropped and all-padding
columns trimmed. The one place that touches transformers' cache internals
(``DynamicCache.layers[i].keys/values``) is here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["RunningBatch", "left_pad"]


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


@dataclass
class RunningBatch:
    cache: DynamicCache
    mask: torch.Tensor  # [rows, cached columns], 1 where a real token is cached
    positions: torch.Tensor  # [rows], position id of each row's next token

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    def merge(self, other: RunningBatch) -> RunningBatch:
        width = max(self.mask.shape[1], other.mask.shape[1])
        cache = DynamicCache()
        for layer, ((ka, va), (kb, vb)) in enumerate(
            zip(_kv(self.cache), _kv(other.cache), strict=True)
        ):
            keys = torch.cat([_pad_left(ka, width), _pad_left(kb, width)])
            values = torch.cat([_pad_left(va, width), _pad_left(vb, width)])
            cache.update(keys, values, layer)
        mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(other.mask, width, dim=1)])
        return RunningBatch(cache, mask, torch.cat([self.positions, other.positions]))

    def select(self, keep: list[int]) -> RunningBatch:
        """Keep these rows, then trim columns that are padding in every remaining row."""
        index = torch.tensor(keep, dtype=torch.long)
        mask = self.mask[index]
        used = mask.any(dim=0).nonzero()
        first = int(used[0]) if used.numel() else mask.shape[1]
        cache = DynamicCache()
        for layer, (keys, values) in enumerate(_kv(self.cache)):
            cache.update(keys[index, :, first:], values[index, :, first:], layer)
        return RunningBatch(cache, mask[:, first:], self.positions[index])


def _kv(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (keys, values), [rows, heads, columns, head_dim]."""
    out = []
    for layer in cache.layers:
        if not isinstance(layer, DynamicLayer) or layer.keys is None or layer.values is None:
            raise TypeError(f"unsupported KV cache layer {type(layer).__name__}")
        out.append((layer.keys, layer.values))
    return out


def _pad_left(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
