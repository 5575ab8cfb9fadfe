"""What a serving process runs between start-up and shutdown: the tasks deployed, the
pipeline, the reloader, capture, and the background work (the registry watcher, the
in-process loop's children, the rate limiter's settling), torn down in reverse."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from gateway.api.state import GatewayState
from gateway.app.engines import EngineFactory, beside_the_loop
from gateway.budgets import TeacherBudgets, all_budgets
from gateway.capture import CaptureRecorder, Spool
from gateway.capture.redis import RedisCaptureSink, default_stream_name
from gateway.engines.base import StudentEngine
from gateway.keys import KeyRing
from gateway.loop.registry import served_tasks
from gateway.metrics import Metrics
from gateway.pipeline.answer import Pipeline
from gateway.pipeline.audit import AuditTracker
from gateway.pipeline.base import Observers
from gateway.pipeline.deployment import Deployment, build_deployment, retire
from gateway.redis_clients import async_redis
from gateway.runtime.loop_processes import LoopProcesses
from gateway.runtime.reloading import Reloader, reload_on_sighup
from gateway.runtime.watcher import RegistryWatcher
from gateway.settings import Settings
from gateway.simulator import start_simulator
from gateway.tasks import CapturePolicy, Task, load_tasks
from gateway.teachers.cache import RedisTeacherCache
from gateway.usage import UsageLedger

__all__ = ["serving_lifespan"]

logger = logging.getLogger("gateway")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

_YOUNG_GENERATION = 20_000  # container allocations between collections; CPython's is 700


def serving_lifespan(state: GatewayState, engine_factory: EngineFactory) -> Lifespan:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settings, metrics = state.settings, state.metrics
        tasks = _current_tasks(settings)
        workers = LoopProcesses(settings, [t for t in tasks.values() if t.loop is not None])
        engine_settings = beside_the_loop(settings, workers)

        def make_engine(task: Task) -> StudentEngine:
            return engine_factory(task, engine_settings, metrics)

        metrics.prepare(tasks)
        policies = {name: task.capture for name, task in tasks.items()}
        recorder = _recorder(settings, policies, metrics)
        deployment = await build_deployment(tasks, make_engine, simulator=start_simulator)
        metrics.prepare_versions(_versions(deployment))
        cache = _teacher_cache(settings)
        budgets = _budgets(settings, metrics)
        ledger = _ledger(settings)
        pipeline = state.pipeline = Pipeline(
            deployment,
            recorder=recorder,
            cache=cache,
            budgets=budgets,
            observer=metrics if ledger is None else Observers(metrics, ledger),
            audits=AuditTracker(window=settings.audit_window, on_observe=_audit_metrics(metrics)),
            tracing=state.tracing,
        )
        metrics.prepare_budgets(all_budgets(state.keyring, tasks.values()))
        reloader = state.reloader = _reloader(state, make_engine, policies)
        async with AsyncExitStack() as stack:  # closed in reverse: the last entered first
            stack.callback(state.tracing.shutdown)  # the last spans exported
            stack.push_async_callback(state.limiter.aclose)
            stack.push_async_callback(_close, pipeline, recorder)
            if cache is not None:
                stack.push_async_callback(cache.aclose)
            stack.push_async_callback(budgets.aclose)
            if ledger is not None:
                stack.push_async_callback(ledger.aclose)
            background = _background(state, reloader, workers, recorder, budgets, ledger)
            await stack.enter_async_context(background)
            stack.callback(reload_on_sighup(reloader))
            _log_start(tasks, state.keyring)
            _settle_the_heap()
            yield

    return lifespan


def _current_tasks(settings: Settings) -> Mapping[str, Task]:
    return served_tasks(load_tasks(settings.tasks_dir))


@asynccontextmanager
async def _background(
    state: GatewayState,
    reloader: Reloader,
    workers: LoopProcesses,
    recorder: CaptureRecorder | None,
    budgets: TeacherBudgets,
    ledger: UsageLedger | None,
) -> AsyncIterator[None]:
    """The work beside the requests, stopped (and waited for) on the way out."""
    settings, pipeline = state.settings, state.serving
    stop = asyncio.Event()
    running = [
        asyncio.create_task(state.limiter.run(stop), name="limits"),
        asyncio.create_task(budgets.run(stop), name="budgets"),
    ]
    if ledger is not None:
        running.append(asyncio.create_task(ledger.run(stop), name="usage"))
    try:
        if any(r.task.loop is not None for r in pipeline.runtimes.values()):
            watcher = RegistryWatcher(
                reloader,
                lambda: pipeline.runtimes,
                redis_url=settings.redis_target or None,
                poll_s=settings.registry_poll_s,
            )
            running.append(asyncio.create_task(watcher.run(stop), name="registry"))
            if settings.loop == "in-process":
                workers.start()
        if recorder is not None:
            await recorder.start()
        yield
    finally:
        stop.set()
        workers.stop()
        await asyncio.gather(*running, return_exceptions=True)


async def _close(pipeline: Pipeline, recorder: CaptureRecorder | None) -> None:
    await pipeline.aclose()
    await retire(pipeline.deployment)
    if recorder is not None:
        await recorder.aclose()


def _reloader(
    state: GatewayState,
    make_engine: Callable[[Task], StudentEngine],
    policies: dict[str, CapturePolicy],
) -> Reloader:
    settings, metrics = state.settings, state.metrics

    def on_reload(new: Deployment) -> None:
        metrics.prepare(new.runtimes)
        tasks = (r.task for r in new.runtimes.values())
        metrics.prepare_budgets(all_budgets(state.keyring, tasks))
        metrics.prepare_versions(_versions(new))
        policies.clear()
        policies.update({name: r.task.capture for name, r in new.runtimes.items()})

    def on_keys(keys: KeyRing) -> None:
        state.keyring = keys
        metrics.prepare_budgets(all_budgets(keys, ()))

    return Reloader(
        state.serving,
        lambda: _current_tasks(settings),
        make_engine,
        on_reload=on_reload,
        load_keys=lambda: KeyRing.load(settings.api_keys, settings.api_keys_file),
        on_keys=on_keys,
        on_outcome=lambda outcome: metrics.reloads.labels(outcome).inc(),
        simulator=start_simulator,
    )


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
    return CaptureRecorder(
        sink,
        Spool(settings.spool_path, max_bytes=settings.spool_max_bytes),
        on_event=lambda outcome, task, n: metrics.capture_records.labels(task, outcome).inc(n),
        on_sink_error=metrics.capture_sink_errors.inc,
    )


def _teacher_cache(settings: Settings) -> RedisTeacherCache | None:
    """The cache of teacher answers lives in Redis, shared by the fleet; none without it."""
    return RedisTeacherCache.from_url(settings.redis_target) if settings.redis_url else None


def _budgets(settings: Settings, metrics: Metrics) -> TeacherBudgets:
    """Budgets counted across the fleet in Redis, as the rate limits are; per process
    without Redis (or with DISTILLGATE_RATE_LIMITS=process)."""
    if settings.rate_limits == "process" or not settings.redis_url:
        return TeacherBudgets()
    return TeacherBudgets.from_url(
        settings.redis_target,
        replicas=settings.rate_limit_replicas,
        on_fallback=metrics.budget_fallback.inc,
    )


def _ledger(settings: Settings) -> UsageLedger | None:
    """The per-day usage the cost report reads, in Redis; none without it."""
    if not settings.redis_url:
        return None
    client = async_redis(settings.redis_target, socket_timeout=2.0, socket_connect_timeout=2.0)
    return UsageLedger(client, retention_days=settings.usage_retention_days)


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


def _log_start(tasks: Mapping[str, Task], keyring: KeyRing) -> None:
    logger.info("serving tasks: %s", ", ".join(tasks))
    if keyring:
        logger.info("%d client keys", len(keyring))
    else:
        logger.warning("no client keys configured: /v1/ is open to anyone who can reach it")


def _settle_the_heap() -> None:
    """What start-up built (frameworks, SDKs, tokenizers: ~200k objects) lives as long as
    the process; freezing it keeps the collector from re-walking it on every full
    collection, a pause that grew with concurrency. A request's objects (a fleet's top-20
    logprobs alone are ~1,500) die by refcount within it, so a larger young generation lets
    them go before any collection sees them, instead of two collections a request
    (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG_GENERATION, 10, 10)
