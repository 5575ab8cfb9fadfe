"""``RegistryWatcher``: a gateway follows its tasks' registries by itself.

When a task's serving version (the registry pointer) or its candidate on trial differs
from what this replica serves, the watcher reloads through the one reload path
(``reloading.Reloader``): the next deployment is built beside the serving one and swapped
in, so no request fails during the switch. It wakes on the loop's Redis message
(``loop/notify.py``) and polls every ``poll_s`` as well, so replicas converge even when a
message is lost or Redis is down. A reload that is refused (a broken version folder)
leaves the old one serving and is tried again on the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.errors import GatewayError
from gateway.loop.notify import channel
from gateway.loop.registry import served
from gateway.pipeline.deployment import DeploymentError, TaskRuntime
from gateway.redis_clients import async_redis
from gateway.runtime.reloading import Reloader
from gateway.tasks import Task

__all__ = ["RegistryWatcher"]

logger = logging.getLogger(__name__)


class RegistryWatcher:
    def __init__(
        self,
        reloader: Reloader,
        runtimes: Callable[[], Mapping[str, TaskRuntime]],
        *,
        redis_url: str | None,
        poll_s: float,
    ) -> None:
        self.reloader, self.runtimes = reloader, runtimes
        self.redis_url, self.poll_s = redis_url, poll_s
        self._wake = asyncio.Event()

    def stale(self) -> list[str]:
        """Tasks whose registry points at another version (or another trial) than the one
        served here."""
        out = []
        for name, runtime in self.runtimes().items():
            task: Task = runtime.task
            if task.loop is None:
                continue
            wanted = served(task.model_copy(update={"student_version": None}))
            there = (wanted.student_version, wanted.trial.label if wanted.trial else None)
            if there != (runtime.student_version, runtime.trial_label):
                out.append(name)
        return out

    async def check(self) -> bool:
        """Reload if any task is stale; whether a reload happened."""
        stale = await asyncio.to_thread(self.stale)
        if not stale:
            return False
        logger.info("serving versions changed for %s: reloading", ", ".join(stale))
        try:
            await self.reloader.reload()
        except (DeploymentError, GatewayError) as exc:
            logger.error("could not switch to the new version: %s (retrying)", exc)
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(), name="registry-listener")
        try:
            while not stop.is_set():
                try:
                    await self.check()
                except Exception:
                    logger.exception("registry watcher: check failed")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._first(stop), self.poll_s)
        finally:
            listener.cancel()

    async def _first(self, stop: asyncio.Event) -> None:
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _listen(self) -> None:
        """Wake on the loop's messages; on Redis trouble, wait and resubscribe (polling
        covers the gap)."""
        if not self.redis_url:
            return
        channels = [channel(name) for name, r in self.runtimes().items() if r.task.loop]
        while channels:
            client = async_redis(self.redis_url, socket_timeout=None)
            try:
                if isinstance(client, RedisCluster):
                    await client.initialize()  # its pubsub needs the slot map
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(*channels)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake.set()
            except (RedisError, OSError):
                await asyncio.sleep(max(self.poll_s, 1.0))
            finally:
                await client.aclose()
