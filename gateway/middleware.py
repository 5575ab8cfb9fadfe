"""Pure ASGI middleware, outermost first: request id, error boundary, body limit, API keys,
then the direct routes.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses and the client-disconnect
signal pass through untouched.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.protocol import new_id
from gateway.errors import GatewayError, PayloadTooLarge, Unauthorized, error_body

__all__ = [
    "ApiKeyMiddleware",
    "BodyLimitMiddleware",
    "DirectRoutes",
    "ErrorBoundaryMiddleware",
    "RequestIdMiddleware",
]

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def send_error(send: Send, exc: GatewayError, request_id: str | None = None) -> None:
    body = json.dumps(
        error_body(exc.message, exc.error_type, param=exc.param, code=exc.code)
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Echo a client's ``x-request-id`` (when it is sane) or mint one, on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _SAFE_ID.match(sent) else new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_id)


class ErrorBoundaryMiddleware:
    """Last resort: an unexpected exception becomes a 500 OpenAI body, never a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            request_id = scope.get("state", {}).get("request_id")
            if isinstance(exc, GatewayError):
                error = exc
            else:
                logger.exception("unhandled error in request %s", request_id)
                error = GatewayError(f"The gateway failed to process request {request_id}.")
            if not started and scope["type"] == "http":
                await send_error(tracking_send, error)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, by declared length or as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"Request body is larger than {self.max_bytes} bytes.")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, too_large)
            return
        seen = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Answer now; the app sees a vanished client and stops reading.
                    refused = True
                    await send_error(send, too_large)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise


class ApiKeyMiddleware:
    """Require ``Authorization: Bearer <key>`` on ``/v1/`` when keys are configured."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"].startswith("/v1/"):
            auth: bytes = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, key = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not any(
                secrets.compare_digest(key.strip(), k) for k in self.keys
            ):
                await send_error(send, Unauthorized("Missing or invalid API key."))
                return
        await self.app(scope, receive, send)


Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """``POST`` on the completion paths goes straight to its endpoint; everything else to
    the FastAPI app. The innermost layer, so ids, metrics, limits and keys apply alike.

    FastAPI's own per-request layers (exception middleware, exit stack, router, body-limit
    and telemetry wrappers) cost more than everything the gateway adds to a request
    (docs/benchmarks.md); the completion endpoints need none of them. Their errors are
    rendered here, as the app's handler would.
    """

    def __init__(self, app: ASGIApp, routes: Mapping[str, Endpoint]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            response = await endpoint(Request(scope, receive, send))
        except GatewayError as exc:
            await send_error(send, exc)
            return
        await response(scope, receive, send)


def request_id_of(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id") or new_id("req"))
