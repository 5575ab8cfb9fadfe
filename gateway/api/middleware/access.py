"""Who may call what: bearer keys by path, and a client key's request allowance.

Here rather than in a route dependency so an unknown caller is refused before its body is
read, and a flooding key is refused before it costs a parse.
"""

from __future__ import annotations

import hmac
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.errors import send_error
from gateway.api.state import GatewayState
from gateway.errors import RateLimited, Unauthorized
from gateway.keys import KeyRing, key_digest

__all__ = ["Access", "AuthMiddleware"]

Access = Literal["open", "client", "admin"]


class AuthMiddleware:
    """Bearer keys by path: client keys on ``/v1/``, the admin key on ``/admin/``, and
    ``/metrics`` and the probes as configured (``open``, ``client`` or ``admin``).

    A client key's identity goes into ``scope["state"]["client_key"]`` for scopes and
    token accounting; its request allowance is taken here, before the body is read.
    With no client keys configured, client-level paths are open.
    """

    def __init__(self, app: ASGIApp, state: GatewayState) -> None:
        self.app = app
        self.state = state  # read per request: a reload swaps the keyring
        admin_key, settings = state.settings.admin_key, state.settings
        self.admin_digest = key_digest(admin_key.get_secret_value()) if admin_key else None
        self.levels: dict[str, Access] = {
            "/metrics": settings.metrics_access,
            "/healthz": settings.health_access,
            "/readyz": settings.health_access,
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
                    await self.state.limiter.admit(client)
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
