"""The outermost net: whatever escapes below becomes an OpenAI error body, never a traceback."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.errors import send_error
from gateway.errors import GatewayError

__all__ = ["ErrorBoundaryMiddleware"]

logger = logging.getLogger(__name__)


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
