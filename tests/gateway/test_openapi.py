"""Schemathesis against the gateway's own OpenAPI document, over real HTTP: every operation,
bodies valid and invalid by the schema. Invariant: no 5xx, every status documented, every
body of the documented shape (OpenAI's completion or error)."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import Gateway

# The document is static: built from the app without starting it, and the same document
# the running gateway serves (checked below).
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@schema.hook
def map_body(context: schemathesis.HookContext, body: object) -> object:
    """Bodies name the served task, so answers are checked too, not only the 404 every
    random model name gets (unknown models: test_fuzz.py, test_routes.py)."""
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        return {**body, "model": "banking77"}
    return body


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_the_document_describes_the_completion_endpoints(gateway: Gateway) -> None:
    raw = httpx.get(f"{gateway.url}/openapi.json").json()
    assert raw == schema.raw_schema
    chat = raw["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ChatCompletionRequest"
    )
    assert {"200", "400", "404", "429", "503"} <= set(chat["responses"])


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_conforms(gateway: Gateway, case: schemathesis.Case) -> None:
    case.call_and_validate(base_url=gateway.url, checks=CHECKS, timeout=30)
