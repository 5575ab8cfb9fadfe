"""``LoopWorker``: the loop of one task, running by itself.

Each ``step`` reads the capture history, then, in this order:

1. **Watch** the serving version: its audits (accepted answers the teacher also answered)
   feed Wald's SPRT (``calibration.AgreementSPRT``); when the agreement has fallen below the
   target the version is marked bad and the last good one serves again (rollback).
2. **Trigger** a round when one is due: no student yet and enough data (labelled or
   captured), ``min_new_pairs`` new records since the last round that trained, a rollback,
   or ``every_s`` elapsed with anything new.
3. **Run** it under the task's lease (``lease.py``), so one worker per task trains at a time;
   another worker finds the lease taken and waits for the next step.

Promotions and rollbacks are published (``notify.py``) so every replica swaps within
seconds; replicas also poll the registry, so a lost message only delays the swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from calibration import AgreementSPRT
from gateway.capture.base import CaptureRecord
from gateway.loop.lease import Lease
from gateway.loop.notify import publish_serving
from gateway.loop.registry import Registry
from gateway.loop.round import RoundReport, run_round
from gateway.loop.source import CaptureHistory
from gateway.loop.trainers import Trainer, trainer_for
from gateway.pipeline.audit import answers_agree
from gateway.tasks import Task

__all__ = ["LoopWorker", "Watch", "watch_serving"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watch:
    version: str | None
    audits: int  # examined until the verdict
    agreement: float | None
    verdict: str  # continue | holds | fell | none


def watch_serving(task: Task, version: str | None, records: Sequence[CaptureRecord]) -> Watch:
    """The SPRT over the serving version's audits, oldest first (deterministic: every
    worker and every restart reaches the same verdict on the same records)."""
    policy = task.loop
    assert policy is not None
    audits = [r for r in records if r.route == "audit" and r.student_version == version]
    audits = [r for r in audits if r.teacher_answer is not None and not r.teacher_error]
    if version is None or not audits:
        return Watch(version, 0, None, "none")
    target = task.routing.target_accuracy or 0.97
    epsilon = min(policy.rollback_epsilon, target / 2)
    test = AgreementSPRT(target, epsilon, alpha=policy.rollback_alpha, beta=policy.rollback_beta)
    verdict = "continue"  # the SPRT restarts after each "holds": report the last decision
    agreed = examined = 0
    for record in audits:
        ok = answers_agree(record.student_answer, record.teacher_answer or "")
        agreed, examined = agreed + ok, examined + 1
        step = test.update(ok)
        if step != "continue":
            verdict = step
        if step == "fell":
            break
    return Watch(version, examined, agreed / examined, verdict)


class LoopWorker:
    def __init__(
        self,
        task: Task,
        history: CaptureHistory,
        *,
        trainer: Trainer | None = None,
        redis_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if task.loop is None:
            raise ValueError(f"task {task.name!r} has no [loop] section")
        self.task, self.policy = task, task.loop
        self.history = history
        self.registry = Registry(task.loop.registry, task.name)
        self.trainer = trainer or trainer_for(task.loop)
        self.redis_url = redis_url
        self.clock = clock
        self.last_status = ""

    def _last_trained(self) -> dict[str, object] | None:
        rounds = [r for r in self.registry.rounds(200) if r.get("outcome") != "skipped"]
        return rounds[-1] if rounds else None

    def due(self, records: Sequence[CaptureRecord], rolled_back: bool) -> str | None:
        """Why a round should run now, or None."""
        if rolled_back:
            return "rollback"
        last = self._last_trained()
        seen = int(last["records_seen"]) if last else 0  # type: ignore[call-overload]
        new = len(records) - seen
        no_student = not (self.task.student / "config.json").is_file()
        if self.registry.serving() is None and last is None and no_student:
            if self.task.build is not None or new >= self.policy.min_pairs:
                return "first student"
            return None
        if new >= self.policy.min_new_pairs:
            return f"{new} new captured records"
        if self.policy.every_s and new > 0 and last is not None:
            finished = str(last.get("finished_at") or "")
            if finished and _age_s(finished, self.clock()) >= self.policy.every_s:
                return "schedule"
        return None

    async def step(self) -> RoundReport | None:
        """One look at the task: watch, maybe roll back, maybe run a round."""
        records = await asyncio.to_thread(self.history.records, self.task)
        serving = self.registry.serving()
        rolled_back = False
        if serving is not None and self.policy.rollback:
            watch = watch_serving(self.task, serving.version, records)
            if watch.verdict == "fell":
                reason = (
                    f"live audit agreement {watch.agreement:.3f} over {watch.audits} audits fell "
                    f"below the target (SPRT)"
                )
                back = self.registry.roll_back(reason)
                logger.error(
                    "task %s: rolled back %s (%s); now serving %s",
                    self.task.name,
                    serving.version,
                    reason,
                    back.version if back else "no student (the teacher answers)",
                )
                await publish_serving(self.redis_url, self.task.name)
                rolled_back = True
        trigger = self.due(records, rolled_back)
        if trigger is None:
            return None
        async with Lease.take(self.redis_url, self.registry, self.task.name) as held:
            if not held:
                self.last_status = "another worker holds the lease"
                return None
            report = await run_round(
                self.task, self.registry, records, self.trainer, trigger=trigger
            )
        if report.outcome == "promoted":
            await publish_serving(self.redis_url, self.task.name)
        self.last_status = f"{report.outcome}: {report.reason}"
        return report

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception:  # the loop must outlive one bad round; the report says why
                logger.exception("task %s: a loop step failed", self.task.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.policy.poll_s)


def _age_s(iso: str, now: float) -> float:
    return now - dt.datetime.fromisoformat(iso).timestamp()
