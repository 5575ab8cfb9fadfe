"""The one renderer of OpenAI error bodies: every refusal, from a handler, a middleware or
FastAPI's own validation and routing, leaves the gateway through here."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Send

from gateway.errors import GatewayError

__all__ = ["HttpError", "error_body", "error_response", "send_error"]


class HttpError(GatewayError):
    """A refusal of the HTTP layer itself (an unknown path, a wrong method)."""

    error_type = "invalid_request_error"

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def error_body(exc: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": exc.message,
            "type": exc.error_type,
            "param": exc.param,
            "code": exc.code,
        }
    }


def _encoded(exc: GatewayError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = orjson.dumps(error_body(exc))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]
    return body, headers


def error_response(exc: GatewayError) -> Response:
    return Response(
        orjson.dumps(error_body(exc)),
        status_code=exc.status_code,
        headers=exc.headers(),
        media_type="application/json",
    )


async def send_error(send: Send, exc: GatewayError) -> None:
    body, headers = _encoded(exc)
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
