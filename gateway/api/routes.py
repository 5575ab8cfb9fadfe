"""Thin routes: parse, call serving, render. No logic lives here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Histogram

from gateway.api.protocol import ChatCompletionRequest, CompletionRequest
from gateway.errors import GatewayError, InvalidRequest, Overloaded
from gateway.metrics import Metrics
from gateway.middleware import request_id_of
from gateway.serving import Serving

__all__ = ["router"]

router = APIRouter()
T = TypeVar("T")


class ClientDisconnected(Exception):
    pass


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``, cancelling it (and so aborting generation) if the client goes away."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientDisconnected
    return task.result()


def _forced_route(request: Request) -> Literal["student", "teacher"] | None:
    value = request.headers.get("x-distillgate-force-route")
    if value is None or not request.app.state.settings.allow_force_route:
        return None
    if value == "student":
        return "student"
    if value == "teacher":
        return "teacher"
    raise InvalidRequest(
        "x-distillgate-force-route must be 'student' or 'teacher'",
        param="x-distillgate-force-route",
    )


async def _answer(request: Request, body: ChatCompletionRequest | CompletionRequest) -> Response:
    serving: Serving = request.app.state.serving
    metrics: Metrics = request.app.state.metrics
    request_id = request_id_of(request.scope)
    task = body.model if body.model in serving.runtimes else "unknown"  # bounded labels
    started = time.perf_counter()
    try:
        forced = _forced_route(request)
        if body.stream:
            events, headers = await _until_disconnect(
                request, serving.stream(body, request_id, forced)
            )
            route = headers["x-distillgate-route"]
            metrics.requests.labels(task, route, "200").inc()
            headers = {**headers, "cache-control": "no-cache"}
            timed = _first_chunk_timed(events, metrics.ttft_seconds.labels(task, route), started)
            return StreamingResponse(timed, media_type="text/event-stream", headers=headers)
        result, headers = await _until_disconnect(
            request, serving.complete(body, request_id, forced)
        )
    except ClientDisconnected:
        metrics.requests.labels(task, "none", "499").inc()
        return Response(status_code=499)
    except GatewayError as exc:
        metrics.requests.labels(task, "none", str(exc.status_code)).inc()
        if isinstance(exc, Overloaded):
            metrics.engine_rejections.labels(task).inc()
        raise
    route = headers["x-distillgate-route"]
    metrics.requests.labels(task, route, "200").inc()
    metrics.request_seconds.labels(task, route).observe(time.perf_counter() - started)
    return JSONResponse(result, headers=headers)


async def _first_chunk_timed(
    events: AsyncIterator[str], ttft: Histogram, started: float
) -> AsyncIterator[str]:
    first = True
    async for event in events:
        if first:
            ttft.observe(time.perf_counter() - started)
            first = False
        yield event


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    return await _answer(request, body)


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    return await _answer(request, body)


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    serving: Serving = request.app.state.serving
    return serving.models()


@router.get("/v1/models/{model}")
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    serving: Serving = request.app.state.serving
    serving.runtime(model)
    return next(m for m in serving.models()["data"] if m["id"] == model)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    serving: Serving | None = getattr(request.app.state, "serving", None)
    if serving is None:
        raise Overloaded("The gateway is starting.", status_code=503)
    try:
        for engine in serving.engines:
            await engine.check_health()
    except GatewayError as exc:
        raise Overloaded(f"Not ready: {exc.message}", status_code=503) from None
    return {"status": "ready"}
