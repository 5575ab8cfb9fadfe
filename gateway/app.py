"""``create_app(settings)``: routes, middleware, error rendering and the engines' lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.admin import router as admin_router
from gateway.api.errors import HttpError, error_response
from gateway.api.keys import KeyRing
from gateway.api.middleware import (
    AuthMiddleware,
    BodyLimitMiddleware,
    DirectRoutes,
    ErrorBoundaryMiddleware,
    HttpMetricsMiddleware,
    RequestIdMiddleware,
)
from gateway.api.openapi import install_openapi
from gateway.api.protocol import invalid_request as validation_error
from gateway.api.ratelimit import ProcessRateLimiter, RateLimiter
from gateway.api.redis_ratelimit import RedisRateLimiter
from gateway.api.routes import direct_routes, router
from gateway.capture import CaptureRecorder, Spool
from gateway.capture.redis import RedisCaptureSink, default_stream_name
from gateway.cores import available_cores, serving_threads
from gateway.engines.base import StudentEngine
from gateway.engines.factory import open_engine
from gateway.engines.vllm import SharedBases
from gateway.errors import GatewayError
from gateway.loop.registry import served_tasks
from gateway.metrics import DeploymentCollector, Metrics, SharedLimitsCollector
from gateway.pipeline.answer import Pipeline
from gateway.pipeline.audit import AuditTracker
from gateway.pipeline.deployment import Deployment, build_deployment, retire
from gateway.runtime.loop_processes import LoopProcesses
from gateway.runtime.reloading import Reloader, reload_on_sighup
from gateway.runtime.watcher import RegistryWatcher
from gateway.settings import Settings
from gateway.simulator import start_simulator
from gateway.tasks import CapturePolicy, Task, load_tasks

__all__ = ["DefaultEngines", "EngineFactory", "create_app"]

logger = logging.getLogger("gateway")

EngineFactory = Callable[[Task, Settings, Metrics], StudentEngine]


class DefaultEngines:
    """The engines tasks ask for; adapters on one base share one vLLM engine (per app)."""

    def __init__(self) -> None:
        self.bases = SharedBases()

    def __call__(self, task: Task, settings: Settings, metrics: Metrics) -> StudentEngine:
        on_step = metrics.batch_size.labels(task=task.name).observe
        return open_engine(task, settings, on_step=on_step, bases=self.bases)


def _recorder(
    settings: Settings, policies: Mapping[str, CapturePolicy], metrics: Metrics
) -> CaptureRecorder | None:
    if not settings.redis_url:
        logger.warning("DISTILLGATE_REDIS_URL is empty: escalations are not captured")
        return None

    def stream_of(task: str) -> str:
        policy = policies.get(task)
        return (policy.stream if policy else None) or default_stream_name(task)

    def maxlen(task: str) -> int:
        policy = policies.get(task)
        return policy.maxlen if policy else CapturePolicy().maxlen

    sink = RedisCaptureSink.from_url(
        settings.redis_target,
        stream_of=stream_of,
        maxlen=maxlen,
        dedup_ttl_s=settings.capture_dedup_ttl_s,
        timeout_s=settings.capture_timeout_s,
        replica_acks=settings.capture_replica_acks,
    )
    spool = Spool(settings.spool_path, max_bytes=settings.spool_max_bytes)
    recorder = CaptureRecorder(
        sink,
        spool,
        on_event=lambda outcome, task, n: metrics.capture_records.labels(task, outcome).inc(n),
        on_sink_error=metrics.capture_sink_errors.inc,
    )
    return recorder


def _limiter(settings: Settings, metrics: Metrics) -> RateLimiter:
    """Fleet-wide limits in Redis unless asked otherwise (or there is no Redis)."""
    if settings.rate_limits == "process" or not settings.redis_url:
        return ProcessRateLimiter()
    limiter = RedisRateLimiter.from_url(
        settings.redis_target,
        replicas=settings.rate_limit_replicas,
        timeout_s=settings.rate_limit_timeout_s,
        on_fallback=metrics.rate_limit_fallback.inc,
    )
    metrics.watch(SharedLimitsCollector(lambda: limiter.shared))
    return limiter


def _audit_metrics(metrics: Metrics) -> Callable[[str, bool], None]:
    def observe(task: str, agreed: bool) -> None:
        metrics.audits.labels(task, "agree" if agreed else "disagree").inc()

    return observe


def _versions(deployment: Deployment) -> list[tuple[str, str]]:
    """(task, version) of every student that decides: the serving ones and the canaries."""
    out = []
    for name, runtime in deployment.runtimes.items():
        out.append((name, runtime.version_label))
        if runtime.trial is not None:
            out.append((name, runtime.trial.runtime.version_label))
    return out


_YOUNG_GENERATION = 20_000  # container allocations between collections; CPython's is 700


def _beside_the_loop(settings: Settings, workers: LoopProcesses) -> Settings:
    """The settings engines are built with: unless told a count, the embedded engine's torch
    threads are the cores the loop's rounds leave when they run in this machine's children
    (spin-waiting threads on a trainer's core made a 60 ms student answer in 3 s)."""
    reserved = workers.threads() if settings.loop == "in-process" else 0
    if settings.torch_threads is not None or not reserved:
        return settings
    cores = available_cores()
    threads = serving_threads(cores, reserved)
    logger.info(
        "the student engine uses %d of %d cores' threads; the loop's rounds keep %d",
        threads,
        cores,
        reserved,
    )
    return settings.model_copy(update={"torch_threads": threads})


def create_app(
    settings: Settings | None = None, *, engine_factory: EngineFactory | None = None
) -> FastAPI:
    """Long because it is the assembly: lifespan, error handlers and the middleware stack in the
    order they wrap, read top to bottom in one place."""
    settings = settings or Settings()
    engine_factory = engine_factory or DefaultEngines()
    metrics = Metrics()
    for name, access in (("metrics", settings.metrics_access), ("health", settings.health_access)):
        if access == "admin" and settings.admin_key is None:
            raise ValueError(f"DISTILLGATE_{name.upper()}_ACCESS=admin needs DISTILLGATE_ADMIN_KEY")
    keyring = KeyRing.load(settings.api_keys, settings.api_keys_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def current_tasks() -> Mapping[str, Task]:
            return served_tasks(load_tasks(settings.tasks_dir))

        tasks = current_tasks()
        workers = LoopProcesses(settings, [t for t in tasks.values() if t.loop is not None])
        engine_settings = _beside_the_loop(settings, workers)

        def make_engine(task: Task) -> StudentEngine:
            return engine_factory(task, engine_settings, metrics)

        metrics.prepare(tasks)
        policies = {name: task.capture for name, task in tasks.items()}
        recorder = _recorder(settings, policies, metrics)
        deployment = await build_deployment(tasks, make_engine, simulator=start_simulator)
        metrics.prepare_versions(_versions(deployment))
        pipeline = Pipeline(
            deployment,
            recorder=recorder,
            observer=metrics,
            audits=AuditTracker(window=settings.audit_window, on_observe=_audit_metrics(metrics)),
        )

        def on_reload(new: Deployment) -> None:
            metrics.prepare(new.runtimes)
            metrics.prepare_versions(_versions(new))
            policies.clear()
            policies.update({name: r.task.capture for name, r in new.runtimes.items()})

        def on_keys(keys: KeyRing) -> None:
            app.state.keyring = keys

        reloader = Reloader(
            pipeline,
            current_tasks,
            make_engine,
            on_reload=on_reload,
            load_keys=lambda: KeyRing.load(settings.api_keys, settings.api_keys_file),
            on_keys=on_keys,
            on_outcome=lambda outcome: metrics.reloads.labels(outcome).inc(),
            simulator=start_simulator,
        )
        app.state.pipeline, app.state.reloader = pipeline, reloader
        forget_sighup = reload_on_sighup(reloader)
        stop_loop = asyncio.Event()
        background: list[asyncio.Task[None]] = []
        try:
            if any(t.loop is not None for t in tasks.values()):
                watcher = RegistryWatcher(
                    reloader,
                    lambda: pipeline.runtimes,
                    redis_url=settings.redis_target or None,
                    poll_s=settings.registry_poll_s,
                )
                background.append(asyncio.create_task(watcher.run(stop_loop), name="registry"))
                if settings.loop == "in-process":
                    workers.start()
            if recorder is not None:
                await recorder.start()
            if isinstance(limiter, RedisRateLimiter):
                background.append(asyncio.create_task(limiter.run(stop_loop), name="limits"))
            logger.info("serving tasks: %s", ", ".join(tasks))
            if keyring:
                logger.info("%d client keys", len(keyring))
            else:
                logger.warning("no client keys configured: /v1/ is open to anyone who can reach it")
            # What start-up built (frameworks, SDKs, tokenizers: ~200k objects) lives as
            # long as the process; freezing it keeps the collector from re-walking it on
            # every full collection, a pause that grew with concurrency. A request's
            # objects (a fleet's top-20 logprobs alone are ~1,500) die by refcount within
            # it, so a larger young generation lets them go before any collection sees
            # them, instead of two collections a request (docs/benchmarks.md).
            gc.collect()
            gc.freeze()
            gc.set_threshold(_YOUNG_GENERATION, 10, 10)
            yield
        finally:
            forget_sighup()
            stop_loop.set()
            workers.stop()
            await asyncio.gather(*background, return_exceptions=True)
            await pipeline.aclose()
            await retire(pipeline.deployment)
            if recorder is not None:
                await recorder.aclose()
            if isinstance(limiter, RedisRateLimiter):
                await limiter.aclose()

    app = FastAPI(title="distillgate", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.keyring = keyring
    limiter = app.state.limiter = _limiter(settings, metrics)
    app.state.draining = False
    metrics.watch(DeploymentCollector(lambda: getattr(app.state, "pipeline", None)))
    app.include_router(router)
    app.include_router(admin_router)
    install_openapi(app)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

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

    app.add_middleware(DirectRoutes, routes=direct_routes)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        AuthMiddleware,
        state=app.state,
        admin_key=settings.admin_key,
        metrics_access=settings.metrics_access,
        health_access=settings.health_access,
    )
    app.add_middleware(ErrorBoundaryMiddleware)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
