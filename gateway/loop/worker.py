"""``LoopWorker``: the loop of one task, running by itself.

Each ``step`` reads the capture history, then, in this order:

1. **Watch** the serving version (``watch.py``): its audits feed Wald's SPRT; when the
   agreement has fallen below the target the event is ``rolled_back``: the version is marked
   bad and the last good one serves again.
2. **Try** a candidate on trial, if there is one: its shadow answers or its canary audits
   since the stage began hold (``stage_holds``: the next stage, or serving) or fall
   (``stage_falls``: it is rejected). No round runs while a candidate is on trial.
3. **Trigger** a round when one is due: no student yet and enough data (labelled or
   captured), ``min_new_pairs`` new records past the cursor of the last round that trained,
   a candidate left by a round that died, drift (a rollback, or the serving version
   escalating significantly more than its calibrator expects), or ``every_s`` elapsed with
   anything new.
4. **Run** it under the task's lease (``lease.py``), so one worker per task trains at a time;
   another worker finds the lease taken and waits for the next step.

Every state the worker acts on is read back from the registry at each step (nothing is kept
in memory but a status line), and every event goes through ``lifecycle.transition``, so a
worker killed at any point and started again carries on from what the registry says.
Promotions, trial stages and rollbacks are published (``notify.py``) so every replica swaps
within seconds; replicas also poll the registry, so a lost message only delays the swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence

from calibration import load_calibration
from gateway.capture.base import CaptureRecord
from gateway.engines.student_folder import is_student
from gateway.judges.base import Judge
from gateway.loop.lease import Lease
from gateway.loop.lifecycle import Event, TrialState, next_stage
from gateway.loop.notify import publish_serving
from gateway.loop.registry import Registry, now
from gateway.loop.round import RoundReport, run_round
from gateway.loop.source import CaptureHistory
from gateway.loop.trainers import Trainer, trainer_for
from gateway.loop.watch import watch_escalation, watch_serving, watch_trial
from gateway.pipeline.decision import routing_goal
from gateway.tasks import Task

__all__ = ["LoopWorker"]

logger = logging.getLogger(__name__)


class LoopWorker:
    def __init__(
        self,
        task: Task,
        history: CaptureHistory,
        *,
        trainer: Trainer | None = None,
        judge: Judge | None = None,
        redis_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``judge``: a free-text task's judge, for its rounds' calibration and gate."""
        if task.loop is None:
            raise ValueError(f"task {task.name!r} has no [loop] section")
        self.task, self.policy = task, task.loop
        self.history = history
        self.registry = Registry(task.loop.registry, task.name)
        self.trainer = trainer or trainer_for(task)
        self.judge = judge
        self.redis_url = redis_url
        self.clock = clock
        self.lease = Lease(
            redis_url,
            self.registry,
            task.name,
            turns=task.loop.one_round_at_a_time,
            priority=task.loop.priority,
            poll_s=task.loop.poll_s,
        )
        self.last_status = ""
        self._state = ""

    def due(self, records: Sequence[CaptureRecord], rolled_back: bool) -> str | None:
        """Why a round should run now, or None."""
        if rolled_back:
            return "rollback"
        if self.registry.candidates():
            return "a round was interrupted"
        cursor = self.registry.cursor()
        new = len(records) - cursor.records_seen
        trained = bool(cursor.round_finished_at)
        no_student = not is_student(self.task.student)
        if self.registry.serving() is None and not trained and no_student:
            if self.task.build is not None or new >= self.policy.min_pairs:
                return "first student"
            return None
        if new >= self.policy.min_new_pairs:
            return f"{new} new captured records"
        age = _age_s(cursor.round_finished_at, self.clock()) if trained else 0.0
        if self.policy.every_s and new > 0 and trained and age >= self.policy.every_s:
            return "schedule"
        return None

    async def step(self) -> RoundReport | None:
        """One look at the task: watch, maybe roll back, maybe run a round."""
        records = await asyncio.to_thread(self.history.records, self.task)
        serving = self.registry.serving()
        rolled_back = False
        if serving is not None and self.policy.rollback:
            target = self._agreement_target(serving.version)
            watch = watch_serving(self.task, serving.version, records, target)
            if watch.verdict == "fell":
                reason = (
                    f"live audit agreement {watch.agreement:.3f} over {watch.audits} audits fell "
                    f"below the target (SPRT)"
                )
                evidence = {"audits": watch.audits, "agreement": watch.agreement}
                back = self.registry.roll_back(reason, evidence)
                logger.error(
                    "task %s: rolled back %s (%s); now serving %s",
                    self.task.name,
                    serving.version,
                    reason,
                    back.version if back else "no student (the teacher answers)",
                )
                rolled_back = True
                await publish_serving(self.redis_url, self.task.name)
        trial = self.registry.trial()
        if trial is not None:  # no new round while a candidate is on trial
            await self._judge_trial(trial, records)
            return None
        trigger = self.due(records, rolled_back) or self._drift(records)
        if trigger is None:
            return None
        last_round_at = _timestamp(self.registry.cursor().round_finished_at)
        async with self.lease.take(last_round_at) as held:
            if not held:
                self._status(f"a round waits: {self.lease.why}", f"due: {trigger}")
                return None
            self._status("a round runs", trigger)
            report = await run_round(
                self.task,
                self.registry,
                records,
                self.trainer,
                trigger=trigger,
                judge_with=self.judge,
            )
        if report.outcome == "promoted":
            await publish_serving(self.redis_url, self.task.name)
        self._state, self.last_status = "", f"{report.outcome}: {report.reason}"
        return report

    def _agreement_target(self, version: str) -> float | None:
        """What the task's goal holds ``version``'s live audits to: its target accuracy, or
        under an escalation budget the accepted accuracy the version's calibration measured."""
        goal = routing_goal(self.task.routing)
        if not goal.is_budget:
            return goal.target_accuracy
        try:
            calibration = load_calibration(self.registry.calibrator(version))
        except (OSError, ValueError):
            return None
        return goal.agreement_target(calibration.metrics_after.get("accepted_accuracy"))

    def _status(self, state: str, detail: str) -> None:
        """A state seen every poll is logged once, when it begins (its detail, such as a
        growing count of new records, does not make it a new state)."""
        if state != self._state:
            logger.info("task %s: %s (%s)", self.task.name, state, detail)
        self._state, self.last_status = state, f"{state} ({detail})"

    def _drift(self, records: Sequence[CaptureRecord]) -> str | None:
        """A round is due when the serving version escalates significantly more than its
        calibrator expects, on the evidence since the last round that trained (so a round
        that could not do better is not re-run until new evidence says so again)."""
        serving = self.registry.serving()
        if serving is None or self.policy.drift_escalation <= 0:
            return None
        try:
            calibration = load_calibration(self.registry.calibrator(serving.version))
        except (OSError, ValueError):
            return None
        coverage = calibration.metrics_after.get("coverage")
        if coverage is None:
            return None
        since = _timestamp(self.registry.cursor().round_finished_at)
        recent = [r for r in records if r.captured_at >= since]
        watch = watch_escalation(self.task, serving.version, 1 - coverage, recent)
        if watch.verdict != "fell" or watch.agreement is None:
            return None
        return (
            f"drift: {serving.version} escalates more than its calibrator expects "
            f"({1 - coverage:.3f}; audits {watch.agreement:.3f} of {watch.audits} records, SPRT)"
        )

    async def _judge_trial(self, trial: TrialState, records: Sequence[CaptureRecord]) -> None:
        watch = watch_trial(self.task, trial, records, self._agreement_target(trial.version))
        self.last_status = (
            f"{trial.version} on trial ({trial.stage}, share {trial.share:g}): "
            f"{watch.audits} answers judged"
        )
        if watch.verdict not in ("fell", "holds"):
            return
        figures = f"agreement {watch.agreement:.3f} over {watch.audits} answers"
        evidence = {"audits": watch.audits, "agreement": watch.agreement, "share": trial.share}
        if watch.verdict == "fell":
            decision, reason = "rejected", f"{trial.stage}: {figures} fell below the target (SPRT)"
            self.registry.stage_fell(trial, Event.STAGE_FALLS, reason, evidence)
            logger.warning(
                "task %s: %s rejected on trial: %s", self.task.name, trial.version, reason
            )
        else:
            following = next_stage(self.policy, trial, self.clock())
            reason = f"{trial.stage} at share {trial.share:g}: {figures} held (SPRT)"
            decision = "promoted" if following is None else f"canary {following.share:g}"
            self.registry.stage_held(trial, following, reason, evidence)
            logger.info("task %s: %s %s: %s", self.task.name, trial.version, decision, reason)
        self.registry.record_round(
            {
                "kind": "trial",
                "trigger": "trial",
                "outcome": decision,
                "reason": reason,
                "candidate": trial.version,
                "stage": trial.stage,
                "share": trial.share,
                "audits": watch.audits,
                "agreement": watch.agreement,
                "finished_at": now(),
            }
        )
        await publish_serving(self.redis_url, self.task.name)

    async def run(self, stop: asyncio.Event) -> None:
        # Workers started together (``serve``'s children) all ask before one takes a turn.
        self.lease.settle_s = self.policy.poll_s
        while not stop.is_set():
            try:
                await self.step()
            except Exception:  # the loop must outlive one bad round; the report says why
                logger.exception("task %s: a loop step failed", self.task.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.policy.poll_s)


def _timestamp(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp() if iso else 0.0


def _age_s(iso: str, now: float) -> float:
    return now - _timestamp(iso)
