"""Every HTTP response counted by path and status (per task and route: ``api/routes.py``)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.paths import API_PATHS
from gateway.metrics import Metrics

__all__ = ["HttpMetricsMiddleware"]


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in API_PATHS else "other"  # bounded labels

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = str(message["status"])
                self.metrics.child(self.metrics.http_requests, path, status).inc()
            await send(message)

        await self.app(scope, receive, observe)
