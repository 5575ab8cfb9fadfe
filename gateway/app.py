"""``create_app(settings)``: routes, middleware, error rendering and the engines' lifespan."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from calibration import Calibration, load_calibration
from gateway.api.routes import router
from gateway.engines.base import StudentEngine
from gateway.errors import GatewayError, error_body
from gateway.metrics import Metrics
from gateway.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    ErrorBoundaryMiddleware,
    RequestIdMiddleware,
)
from gateway.serving import Serving, TaskRuntime
from gateway.settings import Settings
from gateway.tasks import Task, load_tasks
from gateway.teachers.factory import OpenedTeacher, open_teacher

__all__ = ["EngineFactory", "create_app"]

logger = logging.getLogger("gateway")

EngineFactory = Callable[[Task, Settings, Metrics], StudentEngine]


def transformers_engine(task: Task, settings: Settings, metrics: Metrics) -> StudentEngine:
    from gateway.engines.transformers import TransformersEngine

    if not (task.student / "config.json").is_file():
        raise RuntimeError(
            f"task {task.name!r}: no student at {task.student}; build it with "
            f"`distillgate student build --task {task.name}`"
        )
    observe = metrics.batch_size.labels(task=task.name).observe
    return TransformersEngine(
        task.student,
        max_batch_size=settings.max_batch_size,
        max_waiting=settings.max_waiting,
        device=settings.device,
        threads=settings.torch_threads,
        on_step=observe,
    )


def _calibration(task: Task) -> Calibration | None:
    """The task's calibrator, refused unless it was fitted for this very student."""
    if task.calibrator is None or not task.calibrator.is_file():
        logger.warning("task %s has no calibrator: the student answers everything", task.name)
        return None
    return load_calibration(task.calibrator, student_dir=task.student)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request.", None
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    param = ".".join(loc) or None
    return (f"{param}: {msg}" if param else msg), param


class _RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = scope["path"] if scope["path"].startswith("/v1/") else "other"

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route=route, status=str(message["status"])).inc()
                self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, observe)


def create_app(
    settings: Settings | None = None, *, engine_factory: EngineFactory = transformers_engine
) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks: Mapping[str, Task] = load_tasks(settings.tasks_dir)
        shared: dict[str, StudentEngine] = {}  # one engine per student folder
        teachers: list[OpenedTeacher] = []
        runtimes: dict[str, TaskRuntime] = {}
        try:
            for task in tasks.values():
                key = str(task.student)
                if key not in shared:
                    shared[key] = engine_factory(task, settings, metrics)
                    await shared[key].start()
                runtime = TaskRuntime(task, shared[key], calibration=_calibration(task))
                if task.teacher is not None:
                    opened = await open_teacher(task.name, task.teacher, task.answers)
                    teachers.append(opened)
                    runtime.teacher, runtime.teacher_label = opened.teacher, opened.label
                runtimes[task.name] = runtime
            app.state.serving = Serving(runtimes)
            logger.info("serving tasks: %s", ", ".join(tasks))
            yield
        finally:
            for opened in teachers:
                await opened.aclose()
            for engine in shared.values():
                await engine.aclose()

    app = FastAPI(title="distillgate", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    app.include_router(router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        body = error_body(exc.message, exc.error_type, param=exc.param, code=exc.code)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(
            error_body(message, "invalid_request_error", param=param), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ErrorBoundaryMiddleware)
    app.add_middleware(_RequestMetrics, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
