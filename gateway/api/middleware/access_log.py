"""One log line per request, with the ids that find it elsewhere: ``x-request-id`` (the
client's logs, the capture record) and the trace id (the trace backend)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.tracing import current_trace_id

__all__ = ["AccessLogMiddleware"]

logger = logging.getLogger("gateway.access")


class AccessLogMiddleware:
    """Inside ``TracingMiddleware``, so the request's trace is current when it logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500  # no response started: the server's 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            client = scope.get("client")
            logger.info(
                '%s "%s %s" %d %.1f ms request_id=%s trace_id=%s',
                f"{client[0]}:{client[1]}" if client else "-",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - start) * 1000,
                scope.get("state", {}).get("request_id", "-"),
                current_trace_id() or "-",
            )
