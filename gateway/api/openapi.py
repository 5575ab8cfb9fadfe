"""The gateway's OpenAPI document, completion endpoints included.

The completion endpoints read their raw body (``api/routes.py``), so FastAPI cannot see
their wire models; this adds them from the pydantic models themselves, with every status
they answer and the OpenAI shapes of their bodies. Schemathesis tests the running gateway
against this document (tests/gateway/test_openapi.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.api.protocol import ChatCompletionRequest, CompletionRequest
from gateway.api.responses_api import ResponseRequest

__all__ = ["ERROR_RESPONSES", "install_openapi"]

_REF = "#/components/schemas/{model}"
_NULLABLE_STRING = {"type": ["string", "null"]}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": _NULLABLE_STRING,
                "code": _NULLABLE_STRING,
            },
        }
    },
}
_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        name: {"type": "integer", "minimum": 0}
        for name in ("prompt_tokens", "completion_tokens", "total_tokens")
    },
}
_FINISH = {"enum": ["stop", "length", None]}
_LOGPROBS = {"type": ["object", "null"]}
# One server-sent event: a chunk as JSON in ``data``, then ``data: [DONE]``.
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}


def _completion(kind: str, choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": kind},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["index", "finish_reason", *choice],
                    "properties": {
                        "index": {"type": "integer"},
                        "finish_reason": _FINISH,
                        "logprobs": _LOGPROBS,
                        **choice,
                    },
                },
            },
            "usage": _USAGE,
        },
    }


_CHAT = _completion(
    "chat.completion",
    {
        "message": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {"role": {"const": "assistant"}, "content": _NULLABLE_STRING},
        }
    },
)
_TEXT = _completion("text_completion", {"text": {"type": "string"}})
_RESPONSE = {
    "type": "object",
    "required": ["id", "object", "status", "model", "output"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "status": {"enum": ["completed", "incomplete"]},
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": "object"},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("Invalid request, or over one of the task's limits"),
    401: _error("Missing or invalid API key"),
    404: _error("No such model (task), or not for this key"),
    413: _error("Request body too large"),
    429: _error("Rate limit, or the student's queue is full (see Retry-After)"),
    502: _error("The teacher failed and the task's policy is to say so"),
    503: _error("The student or the teacher is unavailable, or the gateway is closing"),
    504: _error("The task's deadline, or the teacher's, passed"),
}


def _operation(summary: str, request: type[Any], body: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": _REF.format(model=request.__name__)},
                }
            },
        },
        "responses": {
            "200": {
                "description": "The answer; an SSE stream of chunks when stream is true",
                "content": {
                    "application/json": {"schema": body},
                    "text/event-stream": {"schema": _SSE_EVENT},
                },
            },
            **{str(status): response for status, response in ERROR_RESPONSES.items()},
        },
    }


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``GET /openapi.json``) describe the completion routes."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Error"] = _ERROR
        for model in (ChatCompletionRequest, CompletionRequest, ResponseRequest):
            schema = model.model_json_schema(ref_template=_REF)
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        doc["paths"]["/v1/chat/completions"] = {
            "post": _operation("Chat completion", ChatCompletionRequest, _CHAT)
        }
        doc["paths"]["/v1/completions"] = {
            "post": _operation("Text completion", CompletionRequest, _TEXT)
        }
        doc["paths"]["/v1/responses"] = {
            "post": _operation("Response (stateless)", ResponseRequest, _RESPONSE)
        }
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
