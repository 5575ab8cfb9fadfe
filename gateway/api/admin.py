"""Admin endpoints, behind their own key (``DISTILLGATE_ADMIN_KEY``, checked in
``middleware.AuthMiddleware``), never a client key.

``POST /admin/reload``: serve the task files (new student, new calibrator) and the client
key file as they are now, without a restart; 409 and nothing changed when they cannot be.
``POST /admin/drain``: ``/readyz`` answers 503 so the load balancer stops sending new
requests, while this process keeps answering what still arrives (``DELETE`` undoes it).
``GET /admin/status``: what is deployed, capture backlog, live audit agreement, each
loop's versions and last rounds, and every teacher budget (spent, left, when it resets).
``POST /admin/cache/clear`` ``{"task": name}``: forget a task's cached teacher answers, on
every replica at once (a new generation of its keys in Redis).
Without an admin key configured these endpoints do not exist (404).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException

from gateway.api.state import GatewayState, gateway_state
from gateway.budgets import all_budgets
from gateway.errors import InvalidRequest, Overloaded, ReloadRefused
from gateway.loop.status import loop_status
from gateway.pipeline.deployment import DeploymentError

__all__ = ["router"]

router = APIRouter(prefix="/admin", include_in_schema=False)


def _enabled(request: Request) -> GatewayState:
    """Without an admin key these endpoints do not exist; with one, the middleware has
    already checked it."""
    state = gateway_state(request)
    if state.settings.admin_key is None:
        raise HTTPException(404, "Admin endpoints are disabled; set DISTILLGATE_ADMIN_KEY.")
    return state


@router.post("/reload")
async def reload(request: Request) -> dict[str, Any]:
    state = _enabled(request)
    if state.reloader is None:
        raise Overloaded("The gateway is starting.", status_code=503)
    try:
        deployment = await state.reloader.reload()
    except DeploymentError as exc:
        raise ReloadRefused(
            f"Reload refused; still serving the previous deployment: {exc}"
        ) from None
    tasks, keys = deployment.describe(), len(state.keyring)
    return {"object": "deployment", "tasks": tasks, "client_keys": keys}


@router.post("/drain")
async def drain(request: Request) -> dict[str, Any]:
    _enabled(request).draining = True
    return {"object": "drain", "draining": True}


@router.delete("/drain")
async def undrain(request: Request) -> dict[str, Any]:
    _enabled(request).draining = False
    return {"object": "drain", "draining": False}


@router.post("/cache/clear")
async def clear_cache(request: Request) -> dict[str, Any]:
    state = _enabled(request)
    pipeline = state.serving
    body = await request.json() if await request.body() else {}
    task = body.get("task") if isinstance(body, dict) else None
    if not isinstance(task, str):
        raise InvalidRequest("Send the task whose answers to forget: {'task': name}.", param="task")
    runtime = pipeline.runtime(task)  # 404 naming the task when there is no such one
    if pipeline.cache is None:
        raise Overloaded("No teacher cache: DISTILLGATE_REDIS_URL is empty.", status_code=503)
    await pipeline.cache.clear(runtime.task.name)
    return {"object": "cache.cleared", "task": runtime.task.name}


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    state = _enabled(request)
    pipeline = state.serving
    recorder = pipeline.recorder
    return {
        "object": "status",
        "draining": state.draining,
        "tasks": pipeline.deployment.describe(),
        "audit": {
            name: pipeline.audits.agreement(name).to_json() if pipeline.audits else None
            for name in pipeline.runtimes
        },
        "capture": None
        if recorder is None
        else {"queued": recorder.queued, "spool_bytes": recorder.spool.size_bytes},
        "budgets": await _budgets(state),
        "loop": {
            name: loop_status(r.task, rounds=5)
            for name, r in pipeline.runtimes.items()
            if r.task.loop is not None
        },
    }


async def _budgets(state: GatewayState) -> list[dict[str, object]]:
    pipeline = state.serving
    if pipeline.budgets is None:
        return []
    tasks = (r.task for r in pipeline.runtimes.values())
    figures = await pipeline.budgets.figures(all_budgets(state.keyring, tasks))
    return [f.as_dict() for f in figures]
