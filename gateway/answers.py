"""What counts as a task's answer, and when two answers are the same one.

A label task's answer is one of its labels, compared as text. A structured task's answer is
a JSON value that validates against the task's JSON Schema, compared parsed, so key order
and spacing do not matter (the student writes compact JSON, a teacher may not). A task with
neither takes any text. One check serves routing (an invalid answer escalates), capture
(only valid teacher answers become training data), the loop and ``evaluate``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "AnswerCheck",
    "SchemaProblem",
    "answer_check",
    "canonical_json",
    "check_schema",
    "fits_schema",
]

# Keywords that name or explain and constrain nothing: a client's generated schema (the
# openai SDK's from a pydantic model) carries titles the task's file need not have.
_ANNOTATIONS = frozenset({"title", "description", "examples", "$comment", "$schema", "default"})
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_VALUES = frozenset({"enum", "const"})
# Keywords whose value can say "no constraint" (``properties: {}``, ``required: []``,
# ``additionalProperties: true``): generators write them, a task's file need not.
_UNCONSTRAINING = frozenset(
    {
        "properties",
        "patternProperties",
        "required",
        "$defs",
        "definitions",
        "additionalProperties",
        "items",
    }
)


class SchemaProblem(ValueError):
    """A task's JSON Schema is not a valid schema."""


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raise ``SchemaProblem`` naming what is wrong, at load time rather than per request."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema, default=Draft202012Validator).check_schema(dict(schema))
    except SchemaError as exc:
        where = "/".join(map(str, exc.path)) or "the root"
        raise SchemaProblem(f"{exc.message} (at {where})") from None


def fits_schema(client: Mapping[str, Any], own: Mapping[str, Any]) -> bool:
    """Whether a client's schema asks for the task's answers: the same constraints,
    annotations aside, except that the client may leave out ``additionalProperties: false``
    (schemas generated outside strict mode do): every answer of the task's still fits it."""
    return _fits(_bare(_inlined(client)), _bare(_inlined(own)))


def _fits(client: object, own: object) -> bool:
    if isinstance(client, dict) and isinstance(own, dict):
        for key in client.keys() | own.keys():
            if key == "additionalProperties" and key not in client and own[key] is False:
                continue
            if key not in client or key not in own or not _fits(client[key], own[key]):
                return False
        return True
    if isinstance(client, list) and isinstance(own, list):
        return len(client) == len(own) and all(map(_fits, client, own))
    return canonical_json(client) == canonical_json(own)


def _inlined(schema: Mapping[str, Any]) -> object:
    """The schema with each local ``$ref`` replaced by the definition it names, so that a
    generator's nested models (pydantic writes ``$defs``) compare with a hand-written schema.
    A recursive definition stays a reference."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def walk(node: object, seen: frozenset[str]) -> object:
        if isinstance(node, list):
            return [walk(item, seen) for item in node]
        if not isinstance(node, Mapping):
            return node
        ref = node.get("$ref")
        name = ref.rsplit("/", 1)[-1] if isinstance(ref, str) else ""
        local = ref in (f"#/$defs/{name}", f"#/definitions/{name}")
        if local and name in defs and name not in seen:
            rest = {key: value for key, value in node.items() if key != "$ref"}
            return walk({**defs[name], **rest}, seen | {name})
        return {key: walk(value, seen) for key, value in node.items()}

    root = {key: value for key, value in schema.items() if key not in ("$defs", "definitions")}
    return walk(root, frozenset())


def _bare(node: object) -> object:
    if isinstance(node, list):
        return [_bare(item) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, object] = {}
    for key, value in node.items():
        if key in _ANNOTATIONS or (key in _UNCONSTRAINING and value in ({}, [], True)):
            continue
        if key in _NAMED_SCHEMAS and isinstance(value, Mapping):
            out[key] = {name: _bare(schema) for name, schema in value.items()}
        elif key == "required" and isinstance(value, list):
            out[key] = sorted(value, key=str)  # a set, whatever order a generator wrote
        else:
            out[key] = value if key in _VALUES else _bare(value)
    return out


def canonical_json(value: object) -> str:
    """One spelling of a JSON value: keys in a fixed order, no spaces, text as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class AnswerCheck:
    """``labels``: the closed answer set, or None. ``schema``: a JSON Schema, or None."""

    def __init__(
        self, labels: frozenset[str] | None = None, schema: Mapping[str, Any] | None = None
    ) -> None:
        self.labels = labels
        self.schema = schema
        self._validator = None
        if schema is not None:  # jsonschema only for the tasks that have one
            from jsonschema import Draft202012Validator
            from jsonschema.validators import validator_for

            self._validator = validator_for(schema, default=Draft202012Validator)(dict(schema))

    @property
    def structured(self) -> bool:
        return self._validator is not None

    @property
    def schema_json(self) -> str | None:
        """The schema as the engines take it, for constrained decoding."""
        return None if self.schema is None else canonical_json(self.schema)

    def parse(self, text: str) -> object | None:
        """The answer's JSON value when it parses and fits the schema, else None."""
        if self._validator is None:
            raise TypeError("only a task with a schema has structured answers")
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if self._validator.is_valid(value) else None

    def problem(self, text: str) -> str | None:
        """Why ``text`` is not a valid answer, or None when it is."""
        if self.labels is not None and text not in self.labels:
            return "outside the answer set"
        if self._validator is not None:
            try:
                value = json.loads(text)
            except ValueError:
                return "not JSON"
            error = next(iter(self._validator.iter_errors(value)), None)
            if error is not None:
                where = "/".join(map(str, error.absolute_path)) or "the answer"
                return f"does not fit the schema at {where}: {error.message}"
        return None

    def valid(self, text: str) -> bool:
        if self.labels is not None and text not in self.labels:
            return False
        return self._validator is None or self.parse(text) is not None

    def key(self, text: str) -> str:
        """What equal answers share: the canonical JSON of a structured answer that parses
        (valid or not: a wrong answer is still compared by value), else the text."""
        if self._validator is None:
            return text
        try:
            return canonical_json(json.loads(text))
        except ValueError:
            return text

    def same(self, a: str, b: str) -> bool:
        return self.key(a) == self.key(b)

    def training_text(self, text: str) -> str:
        """How a valid answer is written for the student to learn: a structured one in its
        canonical spelling (compact, keys sorted), the order constrained decoding enforces
        (the grammar is compiled from the canonical schema, whose properties are sorted), so
        the student learns what it will be allowed to write; other answers as they are."""
        if self._validator is None:
            return text
        return canonical_json(json.loads(text))


@functools.lru_cache(maxsize=64)
def _cached(labels: frozenset[str] | None, schema_json: str | None) -> AnswerCheck:
    return AnswerCheck(labels, None if schema_json is None else json.loads(schema_json))


# The same schema object (a task's, shared by its copies) skips the canonical spelling on
# the hot path; holding the object keeps its id from being reused.
_SEEN: dict[tuple[int, frozenset[str] | None], tuple[Mapping[str, Any], AnswerCheck]] = {}


def answer_check(
    labels: frozenset[str] | None, schema: Mapping[str, Any] | None = None
) -> AnswerCheck:
    """One compiled check per (labels, schema): the schema is compiled once, not per request."""
    if schema is None:
        return _cached(labels, None)
    seen = _SEEN.get((id(schema), labels))
    if seen is not None and seen[0] is schema:
        return seen[1]
    check = _cached(labels, canonical_json(schema))
    if len(_SEEN) > 256:  # task files reloaded many times over
        _SEEN.clear()
    _SEEN[(id(schema), labels)] = (schema, check)
    return check
