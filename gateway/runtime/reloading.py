"""``Reloader``: swap in new students and calibrators without a restart.

The one reload path, for ``POST /admin/reload`` and SIGHUP alike. It re-reads the client
key file (``load_keys``) and the task files, builds the next
deployment beside the serving one (see ``deployment.py``), swaps it in, waits for the old
one's in-flight requests and audits to finish, and closes what only the old one used. A
refused reload (bad key file, bad task file, calibrator of another student, student that
will not load) changes nothing: the old deployment and keys keep serving. Reloads run one
at a time; ``on_outcome`` counts each ("ok" or "refused").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping

from gateway.keys import KeyRing, KeyRingError
from gateway.pipeline.answer import Pipeline
from gateway.pipeline.deployment import (
    Deployment,
    DeploymentError,
    EngineMaker,
    build_deployment,
    retire,
)
from gateway.tasks import Task, TaskConfigError
from gateway.teachers.factory import StartSimulator

__all__ = ["Reloader", "reload_on_sighup"]

logger = logging.getLogger(__name__)


class Reloader:
    def __init__(
        self,
        pipeline: Pipeline,
        load_tasks: Callable[[], Mapping[str, Task]],
        make_engine: EngineMaker,
        *,
        drain_timeout_s: float = 60.0,
        on_reload: Callable[[Deployment], None] | None = None,
        load_keys: Callable[[], KeyRing] | None = None,
        on_keys: Callable[[KeyRing], None] | None = None,
        on_outcome: Callable[[str], None] | None = None,
        simulator: StartSimulator | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.simulator = simulator
        self.load_tasks = load_tasks
        self.make_engine = make_engine
        self.drain_timeout_s = drain_timeout_s
        self.on_reload = on_reload
        self.load_keys = load_keys
        self.on_keys = on_keys
        self.on_outcome = on_outcome
        self._lock = asyncio.Lock()

    async def reload(self) -> Deployment:
        """Serve the key file and task files as they are now; raise ``DeploymentError``
        (and change nothing) if they can't be."""
        try:
            new = await self._reload()
        except DeploymentError:
            if self.on_outcome is not None:
                self.on_outcome("refused")
            raise
        if self.on_outcome is not None:
            self.on_outcome("ok")
        return new

    async def _reload(self) -> Deployment:
        async with self._lock:
            try:
                keys = self.load_keys() if self.load_keys is not None else None
                tasks = self.load_tasks()
            except (TaskConfigError, KeyRingError) as exc:
                raise DeploymentError(str(exc)) from None
            try:
                new = await build_deployment(
                    tasks,
                    self.make_engine,
                    previous=self.pipeline.deployment,
                    simulator=self.simulator,
                )
            except DeploymentError:
                raise
            except Exception as exc:  # a student that will not load, a teacher that won't open
                logger.exception("reload: the new deployment failed to build")
                raise DeploymentError(f"{type(exc).__name__}: {exc}") from exc
            old = self.pipeline.swap(new)
            if keys is not None and self.on_keys is not None:
                self.on_keys(keys)
            if self.on_reload is not None:
                self.on_reload(new)
            logger.info("reloaded: %s", new.describe())
            if not await old.wait_idle(self.drain_timeout_s):
                logger.warning(
                    "reload: %d requests still on the old deployment after %.0fs; retiring it",
                    old.in_flight,
                    self.drain_timeout_s,
                )
            await retire(old, keep=new)
            return new


def reload_on_sighup(reloader: Reloader) -> Callable[[], object]:
    """``kill -HUP <pid>`` reloads, where the process's main thread runs the event loop.
    Returns what undoes it."""
    loop = asyncio.get_running_loop()

    async def reload() -> None:
        try:
            await reloader.reload()  # counted by the reloader's on_outcome
        except DeploymentError as exc:
            logger.error("reload refused: %s", exc)

    jobs: set[asyncio.Task[None]] = set()

    def schedule() -> None:
        job = loop.create_task(reload())
        jobs.add(job)
        job.add_done_callback(jobs.discard)

    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, schedule)
        return lambda: loop.remove_signal_handler(signal.SIGHUP)
    return lambda: None
