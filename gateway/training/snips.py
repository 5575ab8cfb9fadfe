"""The SNIPS NLU benchmark as structured prompt -> answer pairs, and its answer schema.

Each query of ``train_<Intent>_full.json`` is a list of text pieces, some tagged with a
slot name; the answer is the intent and its slots as one JSON object,
``{"intent":"GetWeather","slots":{"city":"Paris","timeRange":"this year"}}``, in its
canonical spelling (compact, keys sorted: the order constrained decoding enforces, so the
student learns to write what the grammar will let it).
An object holds one value per key, so the few queries that name one slot twice (61 of
13,784) are left out and counted, rather than have a value invented for them.

Data: Coucke et al. 2018, "Snips Voice Platform" (arXiv 1805.10190), CC0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.answers import canonical_json
from gateway.examples import Example

__all__ = ["SnipsImport", "read_snips", "snips_answer", "snips_schema"]


@dataclass
class SnipsImport:
    examples: list[Example] = field(default_factory=list)
    slots_by_intent: dict[str, list[str]] = field(default_factory=dict)
    skipped_repeated_slot: int = 0
    files: list[Path] = field(default_factory=list)


def snips_answer(intent: str, slots: dict[str, str]) -> str:
    return canonical_json({"intent": intent, "slots": slots})


def read_snips(folder: Path) -> SnipsImport:
    files = sorted(folder.glob("train_*_full.json"))
    if not files:
        raise FileNotFoundError(f"no train_*_full.json files in {folder}")
    out = SnipsImport(files=files)
    for path in files:
        for intent, queries in json.loads(_read_text(path)).items():
            names = out.slots_by_intent.setdefault(intent, [])
            for query in queries:
                pieces = query["data"]
                slots: dict[str, str] = {}
                repeated = False
                for piece in pieces:
                    name = piece.get("entity")
                    if name is None:
                        continue
                    repeated |= name in slots
                    slots[name] = " ".join(piece["text"].split())
                    if name not in names:
                        names.append(name)
                if repeated:
                    out.skipped_repeated_slot += 1
                    continue
                text = " ".join("".join(p["text"] for p in pieces).split())
                out.examples.append(Example(answer=snips_answer(intent, slots), prompt=text))
    return out


def _read_text(path: Path) -> str:
    """UTF-8, except where an emoji is written as a UTF-8-encoded surrogate pair (CESU-8,
    once in the PlayMusic file): the pair is joined into the character it stands for."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        halves = raw.decode("utf-8", errors="surrogatepass")
        return halves.encode("utf-16", errors="surrogatepass").decode("utf-16")


def snips_schema(slots_by_intent: dict[str, list[str]]) -> dict[str, Any]:
    """One branch per intent: its name and the slots it may carry, each a string; nothing
    else. Tight enough for constrained decoding to rule out a slot of another intent."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "SNIPS voice command",
        "anyOf": [_intent_branch(intent, names) for intent, names in slots_by_intent.items()],
    }


def _intent_branch(intent: str, names: Iterable[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "intent": {"const": intent},
            "slots": {
                "type": "object",
                "properties": {name: {"type": "string"} for name in sorted(names)},
                "additionalProperties": False,
            },
        },
        "required": ["intent", "slots"],
        "additionalProperties": False,
    }
