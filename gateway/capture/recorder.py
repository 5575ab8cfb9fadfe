"""``CaptureRecorder``: takes records off the request path and gets each one stored.

``submit`` only puts a record on an in-memory queue; one background task drains it in
batches into the sink (Redis). When the sink fails or is slow, the batch goes to the disk
spool instead, and from then on new records also go to the spool, behind the ones
already there, so the stream receives records in the order they were captured. The task
retries the sink every ``retry_interval_s`` and, once it answers, replays the spool from
its oldest record. On ``aclose`` (graceful shutdown) everything still queued is written to
the sink or, failing that, the spool.

Every record ends up in exactly one of: the sink, the spool, or the ``dropped`` count
(spool full or queue overflowing, both logged as errors). ``on_event(outcome, task, n)``
reports each move for metrics: written, spooled, replayed, dropped; ``on_sink_error()``
each failed or timed-out write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gateway.capture.base import CaptureRecord, CaptureSink
from gateway.capture.spool import Spool
from gateway.errors import CaptureError

__all__ = ["CaptureRecorder"]

logger = logging.getLogger(__name__)

EventHook = Callable[[str, str, int], None]


def _count_by_task(records: Sequence[CaptureRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.task] = counts.get(r.task, 0) + 1
    return counts


class CaptureRecorder:
    def __init__(
        self,
        sink: CaptureSink,
        spool: Spool,
        *,
        batch_size: int = 200,
        max_queued: int = 100_000,
        retry_interval_s: float = 1.0,
        on_event: EventHook | None = None,
        on_sink_error: Callable[[], None] | None = None,
    ) -> None:
        self.sink = sink
        self.spool = spool
        self.batch_size = batch_size
        self.max_queued = max_queued
        self.retry_interval_s = retry_interval_s
        self.on_event = on_event
        self.on_sink_error = on_sink_error
        self._queue: asyncio.Queue[CaptureRecord | None] = asyncio.Queue()  # None wakes it
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._next_retry = 0.0
        self._sink_down = False
        self._spool_full = False

    # -- the request path ------------------------------------------------------------------
    def submit(self, record: CaptureRecord) -> None:
        """Queue ``record``; never blocks, never raises."""
        if self._closing or self._queue.qsize() >= self.max_queued:
            logger.error("capture queue full or closed: dropping record %s", record.record_id)
            self._emit("dropped", [record])
            return
        self._queue.put_nowait(record)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="capture-recorder")

    async def aclose(self) -> None:
        """Flush what is queued (to the sink, else the spool), then close the sink."""
        self._closing = True
        if self._worker is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self.sink.aclose()

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until nothing is queued or spooled (tests, and operators before maintenance)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.qsize() or self.spool.pending:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # -- the worker ------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                batch = await self._next_batch()
                await self._store(batch)
                if (
                    self.spool.pending
                    and not self._closing
                    and time.monotonic() >= self._next_retry
                ):
                    await self._replay()
            except Exception:  # the worker must outlive any one bad batch
                logger.exception("capture worker error")
                await asyncio.sleep(self.retry_interval_s)
            if self._closing and self._queue.empty():
                return

    async def _next_batch(self) -> list[CaptureRecord]:
        """Wait for a record (at most until the next retry is due), then take what is queued."""
        batch: list[CaptureRecord | None] = []
        wait = self.retry_interval_s if self.spool.pending else None
        if self._queue.empty() and not self._closing:
            with contextlib.suppress(TimeoutError):
                batch.append(await asyncio.wait_for(self._queue.get(), wait))
        while len(batch) < self.batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return [r for r in batch if r is not None]

    async def _store(self, batch: list[CaptureRecord]) -> None:
        if not batch:
            return
        if not self.spool.pending:  # nothing waiting ahead of this batch: try the sink
            try:
                await self.sink.write(batch)
            except CaptureError as exc:
                self._sink_failed(exc)
            else:
                self._emit("written", batch)
                return
        await self._to_spool(batch)

    async def _to_spool(self, batch: list[CaptureRecord]) -> None:
        try:
            kept = await asyncio.to_thread(self.spool.append, batch)
        except OSError as exc:
            logger.error("capture spool %s cannot be written: %s", self.spool.directory, exc)
            kept = 0
        if kept:
            self._emit("spooled", batch[:kept])
        if kept < len(batch):
            if not self._spool_full:
                logger.error(
                    "capture spool %s is full (%d bytes): dropping records until it drains",
                    self.spool.directory,
                    self.spool.max_bytes,
                )
            self._spool_full = True
            self._emit("dropped", batch[kept:])
        else:
            self._spool_full = False

    async def _replay(self) -> None:
        while self.spool.pending:
            records, consumed = await asyncio.to_thread(self.spool.peek, self.batch_size)
            if records:
                try:
                    await self.sink.write(records)
                except CaptureError as exc:
                    self._sink_failed(exc)
                    return
            await asyncio.to_thread(self.spool.commit, consumed)
            self._emit("replayed", records)
            if not self._queue.empty() and not self._closing:
                return  # let new records join the spool's tail before continuing
        if self._sink_down:
            logger.warning("capture sink is back; the spool is replayed")
            self._sink_down = False

    def _sink_failed(self, exc: CaptureError) -> None:
        if self.on_sink_error is not None:
            self.on_sink_error()
        if not self._sink_down:
            logger.warning("capture sink failed (%s): spooling to %s", exc, self.spool.directory)
        self._sink_down = True
        self._next_retry = time.monotonic() + self.retry_interval_s

    def _emit(self, outcome: str, records: Sequence[CaptureRecord]) -> None:
        if self.on_event is None or not records:
            return
        for task, n in _count_by_task(records).items():
            self.on_event(outcome, task, n)
