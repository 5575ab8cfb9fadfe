"""Field-level confidence of a structured answer: which field the student was least sure of.

A field is a member of a JSON object at any depth (``intent``, ``slots.city``); its
confidence is the probability of the tokens that spell it, key and value: exp of the sum
of their logprobs, at the calibrator's temperature when the answer has one. A token that
straddles two fields counts for both. Structure outside every member (braces, an empty
object) belongs to no field. A single sure-looking answer number hides which part of a
record to check; this names it, in the response header and the capture record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.engines.base import TokenDelta

__all__ = ["field_confidences", "least_sure", "member_spans"]


def member_spans(text: str) -> list[tuple[str, int, int]]:
    """(dotted path, start, end) of every object member of a JSON text, key to value end;
    nested members too, after their parent. Empty when the text is not one JSON value."""
    spans: list[tuple[str, int, int]] = []
    try:
        end = _value(text, _skip(text, 0), "", spans)
    except (IndexError, ValueError):
        return []
    return spans if _skip(text, end) == len(text) else []


def field_confidences(deltas: Sequence[TokenDelta]) -> dict[str, float]:
    """Each field's probability (see the module's docstring); {} for a text that is not
    JSON. The end token spells nothing and belongs to no field."""
    text = "".join(d.text for d in deltas)
    spans = member_spans(text)
    if not spans:
        return {}
    bounds, at = [], 0
    for d in deltas:
        bounds.append((at, at + len(d.text)))
        at += len(d.text)
    out: dict[str, float] = {}
    for path, start, end in spans:
        total = sum(
            d.logprob if d.scaled_logprob is None else d.scaled_logprob
            for d, (a, b) in zip(deltas, bounds, strict=True)
            if a < end and b > start and b > a
        )
        out[path] = math.exp(total)
    return out


def least_sure(fields: dict[str, float]) -> tuple[str, float] | None:
    """The leaf field of lowest confidence (a parent spans its children, so it is never
    lower than its least sure child and is left out)."""
    leaves = {p: c for p, c in fields.items() if not any(q.startswith(p + ".") for q in fields)}
    if not leaves:
        return None
    path = min(leaves, key=lambda p: leaves[p])
    return path, leaves[path]


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _value(text: str, i: int, path: str, spans: list[tuple[str, int, int]]) -> int:
    """The end of the JSON value at ``i``, recording object members under ``path``."""
    c = text[i]
    if c == "{":
        i = _skip(text, i + 1)
        if text[i] == "}":
            return i + 1
        while True:
            start = i
            key_end = _string(text, i)
            key = text[start + 1 : key_end - 1]
            i = _skip(text, key_end)
            if text[i] != ":":
                raise ValueError("expected ':'")
            name = f"{path}.{key}" if path else key
            members: list[tuple[str, int, int]] = []
            i = _value(text, _skip(text, i + 1), name, members)
            spans.append((name, start, i))
            spans.extend(members)
            i = _skip(text, i)
            if text[i] == "}":
                return i + 1
            if text[i] != ",":
                raise ValueError("expected ',' or '}'")
            i = _skip(text, i + 1)
    if c == "[":
        i = _skip(text, i + 1)
        if text[i] == "]":
            return i + 1
        n = 0
        while True:
            i = _skip(text, _value(text, i, f"{path}.{n}", spans))
            n += 1
            if text[i] == "]":
                return i + 1
            if text[i] != ",":
                raise ValueError("expected ',' or ']'")
            i = _skip(text, i + 1)
    if c == '"':
        return _string(text, i)
    j = i
    while j < len(text) and text[j] not in ",}] \t\r\n":
        j += 1
    if j == i:
        raise ValueError("expected a value")
    return j


def _string(text: str, i: int) -> int:
    if text[i] != '"':
        raise ValueError("expected a string")
    i += 1
    while text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    return i + 1
