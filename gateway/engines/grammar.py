"""Constrained decoding for the embedded engine: a JSON Schema as a token mask per step.

Through llguidance, the grammar library vLLM runs as its ``guidance`` structured-output
backend, so a student is constrained by the same implementation on a CPU and on a GPU. It
has no dependencies of its own; xgrammar (vLLM's default) masks faster, but both cost well
under 1 % of a decode step here and xgrammar pulls in triton (``docs/structured.md``).

A schema is compiled once per engine (``JsonGrammars.constraint``); each request gets a
copy of the compiled matcher, which is cheap (microseconds).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import llguidance
    from transformers import PreTrainedTokenizerBase

__all__ = ["Constraint", "JsonGrammars"]


class Constraint:
    """One request's grammar state: which tokens may come next, advanced token by token."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size

    def allowed(self) -> torch.Tensor:
        """A boolean mask over the model's vocabulary."""
        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        mask = np.unpackbits(bits, bitorder="little")[: self._vocab_size].astype(bool)
        return torch.from_numpy(mask)

    def advance(self, token_id: int) -> None:
        self._matcher.consume_token(token_id)

    @property
    def failed(self) -> str | None:
        return self._matcher.get_error() if self._matcher.is_error() else None


class JsonGrammars:
    """JSON Schemas compiled for one tokenizer. ``stop_ids``: the ids that end an answer,
    allowed once the JSON is complete. Compact JSON: no whitespace between tokens, as the
    students are trained to write it."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, stop_ids: Iterable[int]
    ) -> None:
        import llguidance.hf

        self._vocab_size = vocab_size
        self._tokenizer = llguidance.hf.from_tokenizer(
            tokenizer,  # type: ignore[arg-type]
            n_vocab=vocab_size,
            eos_token=sorted(stop_ids),
        )
        self._compiled: dict[str, llguidance.LLMatcher] = {}
        self._lock = threading.Lock()

    def constraint(self, schema_json: str) -> Constraint:
        """Raises ``ValueError`` for a schema the grammar compiler refuses."""
        import llguidance

        with self._lock:
            prototype = self._compiled.get(schema_json)
            if prototype is None:
                grammar = llguidance.LLMatcher.grammar_from_json_schema(
                    schema_json, defaults={"whitespace_flexible": False}
                )
                prototype = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
                if prototype.is_error():
                    raise ValueError(f"the schema cannot be compiled: {prototype.get_error()}")
                self._compiled[schema_json] = prototype
        return Constraint(prototype.deep_copy(), self._vocab_size)
