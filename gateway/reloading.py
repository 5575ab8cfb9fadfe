"""``Reloader``: swap in new students and calibrators without a restart.

Triggered by ``POST /admin/reload`` or SIGHUP. It re-reads the task files, builds the next
deployment beside the serving one (see ``deployment.py``), swaps it in, waits for the old
one's in-flight requests and audits to finish, and closes what only the old one used. A
refused reload (bad task file, calibrator of another student, student that will not load)
changes nothing: the old deployment keeps serving. Reloads run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from gateway.deployment import Deployment, DeploymentError, EngineMaker, build_deployment, retire
from gateway.pipeline.answer import Pipeline
from gateway.tasks import Task, TaskConfigError

__all__ = ["Reloader"]

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
    ) -> None:
        self.pipeline = pipeline
        self.load_tasks = load_tasks
        self.make_engine = make_engine
        self.drain_timeout_s = drain_timeout_s
        self.on_reload = on_reload
        self._lock = asyncio.Lock()

    async def reload(self) -> Deployment:
        """Serve the task files as they are now; raise ``DeploymentError`` if they can't be."""
        async with self._lock:
            try:
                tasks = self.load_tasks()
            except TaskConfigError as exc:
                raise DeploymentError(str(exc)) from None
            try:
                new = await build_deployment(
                    tasks, self.make_engine, previous=self.pipeline.deployment
                )
            except DeploymentError:
                raise
            except Exception as exc:  # a student that will not load, a teacher that won't open
                logger.exception("reload: the new deployment failed to build")
                raise DeploymentError(f"{type(exc).__name__}: {exc}") from exc
            old = self.pipeline.swap(new)
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
