"""Routes: parse, hand to the wire adapter (``completions.py``), render; plus the bookkeeping
of the HTTP edge (disconnects, scopes, forced routes, per-request metrics, rate charges).

The completion endpoints take the raw request: they parse the body in one pydantic-core
pass and render with orjson. ``DirectRoutes`` (middleware/direct_routes.py) calls them for ``POST``
without FastAPI's per-request layers, which cost more than everything else the gateway
adds (docs/benchmarks.md); the router keeps them too, so other methods get a 405.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import Histogram

from gateway.api import completions, responses_api
from gateway.api.middleware import request_id_of
from gateway.api.openapi import ERROR_RESPONSES
from gateway.api.protocol import ChatCompletionRequest, CompletionRequest, parse_body
from gateway.api.responses_api import ResponseRequest
from gateway.api.state import GatewayState, gateway_state
from gateway.errors import GatewayError, InvalidRequest, Overloaded, UnknownTask
from gateway.keys import ClientKey
from gateway.pipeline.answer import Forced, Pipeline

__all__ = ["direct_routes", "router"]

router = APIRouter()
T = TypeVar("T")
Body = ChatCompletionRequest | CompletionRequest | ResponseRequest
# An adapter's (pipeline, body, request id, forced route, the caller's key).
Complete = Callable[
    [Pipeline, Any, str, Forced, ClientKey | None],
    Awaitable[tuple[dict[str, Any], dict[str, str]]],
]
Stream = Callable[
    [Pipeline, Any, str, Forced, ClientKey | None],
    Awaitable[tuple[AsyncIterator[str], dict[str, str], int]],
]


class ClientDisconnected(Exception):
    pass


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` in this task; if the client goes away first, cancel it (and so abort
    generation). One watcher task per request, no second task for the work itself."""
    this = asyncio.current_task()
    assert this is not None
    left = False

    async def watch() -> None:
        nonlocal left
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left = True
        this.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if left and this.uncancel() == 0:
            raise ClientDisconnected from None
        raise
    finally:
        watcher.cancel()


def json_response(content: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), media_type="application/json", headers=headers)


def _forced_route(request: Request, state: GatewayState) -> Literal["student", "teacher"] | None:
    value = request.headers.get("x-distillgate-force-route")
    if value is None or not state.settings.allow_force_route:
        return None
    if value == "student":
        return "student"
    if value == "teacher":
        return "teacher"
    raise InvalidRequest(
        "x-distillgate-force-route must be 'student' or 'teacher'",
        param="x-distillgate-force-route",
    )


def _client_key(request: Request) -> ClientKey | None:
    key: ClientKey | None = request.scope.get("state", {}).get("client_key")
    return key


def _check_scope(key: ClientKey | None, model: str) -> None:
    """A key scoped to other tasks sees this one as absent, as OpenAI words it."""
    if key is not None and not key.may_call(model):
        raise UnknownTask(
            f"The model {model!r} does not exist or you do not have access to it.", param="model"
        )


async def _answer(
    request: Request,
    body: Body,
    complete: Complete = completions.complete,
    stream: Stream = completions.stream,
) -> Response:
    """One completion request, whichever wire format: ``complete`` and ``stream`` are its
    adapter's (chat and legacy completions, or the Responses API)."""
    state = gateway_state(request)
    pipeline, metrics = state.serving, state.metrics
    request_id = request_id_of(request.scope)
    task = body.model if body.model in pipeline.runtimes else "unknown"  # bounded labels
    key = _client_key(request)
    started = time.perf_counter()
    try:
        _check_scope(key, body.model)
        forced = _forced_route(request, state)
        if body.stream:
            events, headers, tokens = await _until_disconnect(
                request, stream(pipeline, body, request_id, forced, key)
            )
            if key is not None:
                state.limiter.charge(key, tokens)
            route = headers["x-distillgate-route"]
            metrics.child(metrics.requests, task, route, "200").inc()
            headers = {**headers, "cache-control": "no-cache"}
            ttft = metrics.child(metrics.ttft_seconds, task, route)
            timed = _first_chunk_timed(events, ttft, started)
            return StreamingResponse(timed, media_type="text/event-stream", headers=headers)
        result, headers = await _until_disconnect(
            request, complete(pipeline, body, request_id, forced, key)
        )
    except ClientDisconnected:
        metrics.requests.labels(task, "none", "499").inc()
        return Response(status_code=499)
    except GatewayError as exc:
        metrics.requests.labels(task, "none", str(exc.status_code)).inc()
        if isinstance(exc, Overloaded):
            metrics.engine_rejections.labels(task).inc()
        raise
    if key is not None:
        state.limiter.charge(key, result["usage"]["total_tokens"])
    route = headers["x-distillgate-route"]
    metrics.child(metrics.requests, task, route, "200").inc()
    metrics.child(metrics.request_seconds, task, route).observe(time.perf_counter() - started)
    return json_response(result, headers)


async def _first_chunk_timed(
    events: AsyncIterator[str], ttft: Histogram, started: float
) -> AsyncIterator[str]:
    first = True
    async for event in events:
        if first:
            ttft.observe(time.perf_counter() - started)
            first = False
        yield event


async def create_chat_completion(request: Request) -> Response:
    return await _answer(request, parse_body(ChatCompletionRequest, await request.body()))


async def create_completion(request: Request) -> Response:
    return await _answer(request, parse_body(CompletionRequest, await request.body()))


async def create_response(request: Request) -> Response:
    body = parse_body(ResponseRequest, await request.body())
    return await _answer(request, body, responses_api.complete, responses_api.stream)


direct_routes = {
    "/v1/chat/completions": create_chat_completion,
    "/v1/completions": create_completion,
    "/v1/responses": create_response,
}
for path, endpoint in direct_routes.items():
    router.add_route(path, endpoint, methods=["POST"])


_KEYED: dict[int | str, dict[str, Any]] = {401: ERROR_RESPONSES[401]}


@router.get("/v1/models", responses=_KEYED)
async def list_models(request: Request) -> dict[str, Any]:
    pipeline = gateway_state(request).serving
    key = _client_key(request)
    models = completions.models(pipeline)
    models["data"] = [m for m in models["data"] if key is None or key.may_call(m["id"])]
    return models


@router.get("/v1/models/{model}", responses={**_KEYED, 404: ERROR_RESPONSES[404]})
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    pipeline = gateway_state(request).serving
    _check_scope(_client_key(request), model)
    pipeline.runtime(model)
    return next(m for m in completions.models(pipeline)["data"] if m["id"] == model)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", responses={503: ERROR_RESPONSES[503]})
async def readyz(request: Request) -> dict[str, str]:
    state = gateway_state(request)
    pipeline = state.serving
    if state.draining:
        raise Overloaded("The gateway is draining (POST /admin/drain).", status_code=503)
    try:
        for engine in pipeline.engines:
            await engine.check_health()
    except GatewayError as exc:
        raise Overloaded(f"Not ready: {exc.message}", status_code=503) from None
    return {"status": "ready"}
