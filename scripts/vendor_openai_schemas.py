"""Vendor the OpenAI response schemas the conformance tests validate against.

    python scripts/vendor_openai_schemas.py path/to/openapi.yaml

reads OpenAI's OpenAPI document (github.com/openai/openai-openapi, ``openapi.yaml``) and
writes ``tests/gateway/openai_schemas.json``: the named schemas and everything they
reference, as JSON Schema 2020-12 ``$defs``, with the document's version recorded.

Two rewrites. The 3.1 document still marks some fields ``nullable: true`` (an OpenAPI 3.0
keyword that JSON Schema ignores), so a strict validator rejects ``null`` where OpenAI
itself sends it (``finish_reason`` and ``logprobs`` of every stream chunk but the last).
Such a schema gets ``"null"`` added to its ``type`` (and to its ``enum``). And one schema
nests itself by 2019-09's ``$recursiveRef``, which 2020-12 validators refuse: it becomes a
``$ref`` to its own definition. Descriptions are dropped; nothing else changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ErrorResponse",
    "ListModelsResponse",
    "Response",
    "ResponseStreamEvent",
)
OUT = Path(__file__).resolve().parents[1] / "tests" / "gateway" / "openai_schemas.json"


def _rewrite(node: Any) -> Any:
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rewrite(v) for k, v in node.items() if k not in ("description", "nullable")}
    if "$ref" in out:
        out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/$defs/")
    if node.get("nullable"):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        if kind is None and "enum" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _recursion(node: Any, name: str) -> Any:
    """2019-09's ``$recursiveRef: "#"`` (one filter schema nests itself) as a plain ``$ref`` to
    its own definition; 2020-12 validators refuse ``$recursiveAnchor: true``."""
    if isinstance(node, list):
        return [_recursion(v, name) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _recursion(v, name) for k, v in node.items() if k != "$recursiveAnchor"}
    if out.pop("$recursiveRef", None) == "#":
        out["$ref"] = f"#/$defs/{name}"
    return out


def _closure(schemas: dict[str, Any], roots: tuple[str, ...]) -> list[str]:
    seen: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                visit(ref.rsplit("/", 1)[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    def visit(name: str) -> None:
        if name not in seen:
            seen.append(name)
            walk(schemas[name])

    for root in roots:
        visit(root)
    return sorted(seen)


def main(path: str) -> None:
    document = yaml.safe_load(Path(path).read_text())
    schemas = document["components"]["schemas"]
    vendored = {
        "source": "github.com/openai/openai-openapi openapi.yaml",
        "version": document["info"]["version"],
        "rewrites": "nullable: true -> 'null' added to type/enum; descriptions dropped; "
        "$recursiveRef '#' -> $ref to its own definition",
        "$defs": {
            name: _recursion(_rewrite(schemas[name]), name) for name in _closure(schemas, ROOTS)
        },
    }
    OUT.write_text(json.dumps(vendored, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({len(vendored['$defs'])} schemas, OpenAPI {vendored['version']})")


if __name__ == "__main__":
    main(sys.argv[1])
