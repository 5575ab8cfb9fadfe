"""The completion endpoints without FastAPI's per-request layers (docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.errors import send_error
from gateway.errors import GatewayError

__all__ = ["DirectRoutes", "Endpoint"]


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
