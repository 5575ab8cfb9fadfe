"""``create_app(settings)``: the state, the routes, error rendering and the middleware
stack, in the order they wrap; what runs between start-up and shutdown is ``lifespan.py``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.admin import router as admin_router
from gateway.api.errors import HttpError, error_response
from gateway.api.middleware import (
    AccessLogMiddleware,
    AuthMiddleware,
    BodyLimitMiddleware,
    DirectRoutes,
    ErrorBoundaryMiddleware,
    HttpMetricsMiddleware,
    RequestIdMiddleware,
    TracingMiddleware,
)
from gateway.api.openapi import install_openapi
from gateway.api.protocol import invalid_request as validation_error
from gateway.api.routes import direct_routes, router
from gateway.api.state import GatewayState
from gateway.app.engines import DefaultEngines, EngineFactory
from gateway.app.lifespan import serving_lifespan
from gateway.errors import GatewayError
from gateway.keys import KeyRing
from gateway.limits import open_limiter
from gateway.metrics import LiveCollector, Metrics, ServingSnapshot
from gateway.runtime.snapshot import serving_snapshot
from gateway.settings import Settings
from gateway.tracing import open_tracing

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None, *, engine_factory: EngineFactory | None = None
) -> FastAPI:
    settings = settings or Settings()
    for name, access in (("metrics", settings.metrics_access), ("health", settings.health_access)):
        if access == "admin" and settings.admin_key is None:
            raise ValueError(f"DISTILLGATE_{name.upper()}_ACCESS=admin needs DISTILLGATE_ADMIN_KEY")
    metrics = Metrics()
    state = GatewayState(
        settings=settings,
        metrics=metrics,
        keyring=KeyRing.load(settings.api_keys, settings.api_keys_file),
        limiter=open_limiter(settings, on_fallback=metrics.rate_limit_fallback.inc),
        tracing=open_tracing(settings),
    )

    def snapshot() -> ServingSnapshot | None:
        pipeline = state.pipeline
        return (
            None if pipeline is None else serving_snapshot(pipeline, state.limiter, state.keyring)
        )

    metrics.watch(LiveCollector(snapshot))
    lifespan = serving_lifespan(state, engine_factory or DefaultEngines())
    app = FastAPI(title="distillgate", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = state
    app.include_router(router)
    app.include_router(admin_router)
    install_openapi(app)
    _render_errors(app)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    # Added innermost first: a request meets RequestIdMiddleware first, DirectRoutes last.
    app.add_middleware(DirectRoutes, routes=direct_routes)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, state=state)
    app.add_middleware(ErrorBoundaryMiddleware)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    if settings.access_log:
        app.add_middleware(AccessLogMiddleware)
    app.add_middleware(TracingMiddleware, tracing=state.tracing)
    app.add_middleware(RequestIdMiddleware)
    return app


def _render_errors(app: FastAPI) -> None:
    """Every error as OpenAI words it: its body shape, its status, never a traceback."""

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code in (404, 405):  # as OpenAI words an unknown path or method
            message = f"Invalid URL ({request.method} {request.url.path})"
        return error_response(HttpError(message, status_code=exc.status_code))
