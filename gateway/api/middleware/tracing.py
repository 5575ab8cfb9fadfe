"""The request's own span, at the HTTP edge: every other span of the request is its child.
The API's and the admin's requests only: probes and scrapes would be most of the traces."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.paths import API_PATHS
from gateway.tracing import Tracing

__all__ = ["TracingMiddleware"]

_TRACED = ("/v1/", "/admin/")


class TracingMiddleware:
    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app, self.tracing = app, tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_TRACED):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        route = path if path in API_PATHS else None  # span names of bounded cardinality
        opened = self.tracing.request_span(
            scope["headers"], lambda: f"{method} {route}" if route else method
        )
        if opened is None:  # traces off (or not sampled) and no client trace to carry on
            await self.app(scope, receive, send)
            return
        with opened as span:
            if span.is_recording():
                span.set_attributes(
                    {
                        "http.request.method": method,
                        "url.path": path,
                        "url.scheme": scope.get("scheme", "http"),
                        "distillgate.request_id": scope.get("state", {}).get("request_id", ""),
                        **({"http.route": route} if route else {}),
                    }
                )

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start" and span.is_recording():
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_attribute("error.type", str(status))
                await send(message)

            await self.app(scope, receive, send_traced)
