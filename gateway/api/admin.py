"""Admin endpoints, behind their own key (``DISTILLGATE_ADMIN_KEY``), never a client key.

``POST /admin/reload``: serve the task files as they are now (new student, new calibrator)
without a restart; 409 and nothing changed when they cannot be served.
``GET /admin/status``: what is deployed, capture backlog and live audit agreement.
Without an admin key configured these endpoints do not exist (404).
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException

from gateway.deployment import DeploymentError
from gateway.errors import ReloadRefused, Unauthorized
from gateway.reloading import Reloader
from gateway.serving import Serving
from gateway.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/admin", include_in_schema=False)


def _authorize(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if settings.admin_key is None:
        raise HTTPException(404, "Admin endpoints are disabled; set DISTILLGATE_ADMIN_KEY.")
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    expected = settings.admin_key.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(key.strip().encode(), expected):
        raise Unauthorized("Missing or invalid admin key.")


@router.post("/reload")
async def reload(request: Request) -> dict[str, Any]:
    _authorize(request)
    reloader: Reloader = request.app.state.reloader
    reloads = request.app.state.metrics.reloads
    try:
        deployment = await reloader.reload()
    except DeploymentError as exc:
        reloads.labels("refused").inc()
        raise ReloadRefused(
            f"Reload refused; still serving the previous deployment: {exc}"
        ) from None
    reloads.labels("ok").inc()
    return {"object": "deployment", "tasks": deployment.describe()}


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    _authorize(request)
    serving: Serving = request.app.state.serving
    recorder = serving.recorder
    return {
        "object": "status",
        "tasks": serving.deployment.describe(),
        "audit": {
            name: serving.audits.agreement(name).to_json() if serving.audits else None
            for name in serving.runtimes
        },
        "capture": None
        if recorder is None
        else {"queued": recorder.queued, "spool_bytes": recorder.spool.size_bytes},
    }
