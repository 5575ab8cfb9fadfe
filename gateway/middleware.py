"""Pure ASGI middleware, outermost first: request id, error boundary, keys (and request
rate limits, so an unknown caller never gets its body read), body limit, then the direct
routes. ``app.create_app`` composes them.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses and the client-disconnect
signal pass through untouched.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

from pydantic import SecretStr
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.protocol import new_id
from gateway.auth import KeyRing, key_digest
from gateway.errors import GatewayError, PayloadTooLarge, RateLimited, Unauthorized, error_body

__all__ = [
    "AuthMiddleware",
    "BodyLimitMiddleware",
    "DirectRoutes",
    "ErrorBoundaryMiddleware",
    "RequestIdMiddleware",
]

logger = logging.getLogger(__name__)

Access = Literal["open", "client", "admin"]
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def send_error(send: Send, exc: GatewayError) -> None:
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


class AuthMiddleware:
    """Bearer keys by path: client keys on ``/v1/``, the admin key on ``/admin/``, and
    ``/metrics`` and the probes as configured (``open``, ``client`` or ``admin``).

    A client key's identity goes into ``scope["state"]["client_key"]`` for scopes and
    token accounting; its request allowance is taken here, before the body is read.
    With no client keys configured, client-level paths are open.
    """

    def __init__(
        self,
        app: ASGIApp,
        state: State,
        admin_key: SecretStr | None,
        metrics_access: Access,
        health_access: Access,
    ) -> None:
        self.app = app
        self.state = state  # .keyring, .limiter, .metrics: a reload swaps the keyring
        self.admin_digest = key_digest(admin_key.get_secret_value()) if admin_key else None
        self.levels: dict[str, Access] = {
            "/metrics": metrics_access,
            "/healthz": health_access,
            "/readyz": health_access,
        }

    def _level(self, path: str) -> Access:
        if path.startswith("/v1/"):
            return "client"
        if path.startswith("/admin/"):
            return "admin" if self.admin_digest is not None else "open"  # 404 from the router
        return self.levels.get(path, "open")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        level = self._level(scope["path"])
        keyring: KeyRing = self.state.keyring
        if level == "open" or (level == "client" and not keyring):
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        is_admin = (
            presented is not None
            and self.admin_digest is not None
            and hmac.compare_digest(key_digest(presented), self.admin_digest)
        )
        client = (
            keyring.identify(presented) if presented is not None and level == "client" else None
        )
        if level == "admin" and not is_admin:
            await send_error(send, Unauthorized("Missing or invalid admin key."))
            return
        if level == "client" and client is None and not (is_admin and scope["path"] in self.levels):
            await send_error(send, Unauthorized("Missing or invalid API key."))
            return
        if client is not None:
            scope.setdefault("state", {})["client_key"] = client
            if scope["method"] == "POST":
                try:
                    self.state.limiter.admit(client)
                except RateLimited as exc:
                    self.state.metrics.rate_limited.labels(client.name, exc.error_type).inc()
                    await send_error(send, exc)
                    return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.partition(b" ")
            return key.strip() if scheme.lower() == b"bearer" and key.strip() else None
    return None


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
