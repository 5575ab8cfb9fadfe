"""The data path, strung together: request → student → confidence → accept or escalate →
capture → the served answer.

``Pipeline.answer`` takes plain values (a ``TaskRuntime``, a ``GenerationRequest`` under
the task's own limits, the client's ``ReplyOptions``) and returns one immutable
``Answer``; it knows nothing of HTTP. The student answers first (``student.py``), the pure
rule decides (``decision.py``), a low-confidence or invalid answer goes to the teacher
(``escalation.py``) and is captured (``record.py``); a teacher failure answers with the
student (``student-fallback``) or an error, per the task's policy. The client's
``max_tokens`` and ``stop`` then cut whichever answer is served (``reply.py``).

An escalation asks the cache of teacher answers first (``teachers/cache.py``): a prompt the
teacher answered before is served from it (route ``cache``), not captured again (the loop
must not count one label twice) and not paid for. Every teacher call is then held against
the caller's and the task's budgets (``gateway/budgets/``): once one is spent the student's
answer is served in its place (route ``student-fallback``, the budget named) or a 429, per
the task's ``on_budget``; audits and shadow answers stop earlier, at ``audits_stop_at``.

A random ``audit_rate`` share of accepted answers is also put to the teacher in the
background, never delaying the client (``audit.py`` keeps the live agreement); its record
is captured with route ``audit``. ``answer()`` is also what ``distillgate evaluate`` replays.

Each step is a span of the request's trace (``pipeline/trace.py``): the student, the decision, the
teacher, the capture; audits and shadow answers are traces of their own, linked to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Coroutine, Mapping
from typing import Literal

from gateway.budgets import Hold, OverBudget, TeacherBudgets, budgets_of
from gateway.capture import CapturedRoute, CaptureRecorder
from gateway.engines.base import GenerationRequest, StudentEngine
from gateway.errors import BudgetSpent, EngineError, EngineUnavailable, TeacherError, UnknownTask
from gateway.judges.base import JudgeRequest, Verdict
from gateway.keys import ClientKey
from gateway.pipeline.audit import AuditTracker, answers_agree
from gateway.pipeline.base import Answer, NullObserver, PipelineObserver
from gateway.pipeline.costs import TeacherCosts
from gateway.pipeline.decision import Decision, Reason, Route, decide
from gateway.pipeline.deployment import Deployment, TaskRuntime
from gateway.pipeline.escalation import ask_teacher, teacher_reply, teacher_request
from gateway.pipeline.record import capture_record
from gateway.pipeline.reply import Reply, ReplyOptions, fit
from gateway.pipeline.student import StudentTurn, run_student
from gateway.pipeline.trace import (
    answer_attributes,
    capture_attributes,
    decision_attributes,
    student_attributes,
)
from gateway.tasks import Task
from gateway.teachers.base import TeacherAnswer, TeacherRequest
from gateway.teachers.cache import CacheUnavailable, TeacherCache, cache_key
from gateway.tracing import SpanContext, SpanKind, Tracing

__all__ = ["Forced", "Pipeline"]

logger = logging.getLogger(__name__)

Forced = Literal["student", "teacher"] | None  # the route a test or load test asks for
# The reasons that are a version's own decision (a forced route or a failure is not).
_DECIDED = {Reason.CONFIDENT, Reason.LOW_CONFIDENCE, Reason.INVALID_ANSWER, Reason.NO_STUDENT}


class Pipeline:
    def __init__(
        self,
        deployment: Deployment | Mapping[str, TaskRuntime],
        *,
        recorder: CaptureRecorder | None = None,
        audits: AuditTracker | None = None,
        observer: PipelineObserver | None = None,
        rng: random.Random | None = None,
        tracing: Tracing | None = None,
        cache: TeacherCache | None = None,
        budgets: TeacherBudgets | None = None,
    ) -> None:
        if not isinstance(deployment, Deployment):
            deployment = Deployment(runtimes=dict(deployment))
        self.deployment = deployment
        self.recorder = recorder
        self.audits = audits  # None: no audits (offline replays)
        self.observer: PipelineObserver = observer or NullObserver()
        self._background: set[asyncio.Task[None]] = set()
        self._rng = rng or random.Random()  # who a canary serves, what a shadow answers
        self.tracing = tracing or Tracing()  # off: every span a no-op
        self.cache = cache  # None: every escalation asks the teacher
        self.budgets = budgets  # None: no budget is enforced
        self.costs = TeacherCosts()

    @property
    def runtimes(self) -> Mapping[str, TaskRuntime]:
        return self.deployment.runtimes

    def swap(self, new: Deployment) -> Deployment:
        """Serve ``new`` from the next request on; return the old one (to drain and retire)."""
        old, self.deployment = self.deployment, new
        return old

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Let running audits finish (their records are captured), cancel the stragglers."""
        if self._background:
            _, pending = await asyncio.wait(self._background, timeout=timeout_s)
            for task in pending:
                task.cancel()

    @property
    def engines(self) -> list[StudentEngine]:
        engines = (r.engine for r in self.runtimes.values() if r.engine is not None)
        return list({id(e): e for e in engines}.values())

    def runtime(self, name: str) -> TaskRuntime:
        runtime = self.runtimes.get(name)
        if runtime is None:
            raise UnknownTask(
                f"The model {name!r} does not exist; see GET /v1/models.", param="model"
            )
        return runtime

    # -- the data path -------------------------------------------------------------------
    async def answer(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        *,
        forced: Forced = None,
        options: ReplyOptions | None = None,
        caller: ClientKey | None = None,
    ) -> Answer:
        """Decide on the student's whole answer (``gen`` carries the task's own limits),
        then serve the chosen answer within the client's ``options``. ``caller``: the
        client key (whose cached teacher answers the request may get, whose budgets it
        spends); None where the gateway has no keys.

        With a candidate on trial, a canary serves its share of requests in the serving
        version's place; a shadow answers its share again, off the request path.
        """
        trial = runtime.trial
        deciding = runtime
        if trial is not None and trial.stage == "canary" and self._rng.random() < trial.share:
            deciding = trial.runtime
        answer = await self._decide(deciding, gen, forced=forced, options=options, caller=caller)
        if answer.reason in _DECIDED:
            accepted = answer.reason == Reason.CONFIDENT
            self.observer.decided(runtime.task.name, deciding.version_label, accepted)
        shadows = trial is not None and trial.stage == "shadow" and runtime.teacher is not None
        if shadows and trial is not None and self._rng.random() < trial.share:
            shadow = self._shadow(trial.runtime, gen, caller, self.tracing.cause())
            self._in_background(shadow, "shadow")
        answer = dataclasses.replace(answer, student_version=deciding.version_label)
        key = caller.name if caller is not None else ""
        self.observer.served(runtime.task.name, key, answer.route.value, answer.teacher_saved_usd)
        request = self.tracing.current_span()  # the HTTP edge's: the outcome, to search by
        if request.is_recording():
            request.set_attributes(answer_attributes(runtime.task, answer))
        return answer

    async def _decide(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        *,
        forced: Forced,
        options: ReplyOptions | None,
        caller: ClientKey | None = None,
    ) -> Answer:
        """Long on purpose: the data path in one readable sequence, each step a call into
        its module."""
        task = runtime.task
        options = options or ReplyOptions()
        deadline = asyncio.get_running_loop().time() + task.limits.deadline_s
        if runtime.engine is None:
            return await self._without_student(runtime, gen, deadline, options, caller)
        try:
            turn = await self._student(runtime, gen, deadline)
        except EngineError as exc:
            if task.routing.on_student_failure != "teacher" or runtime.teacher is None:
                raise
            return await self._teacher_instead(
                runtime, gen, deadline, options, Reason.STUDENT_FAILED, caller, failure=exc
            )
        with self.tracing.span("decision") as span:
            decision = _judge(runtime, turn, forced)
            if span.is_recording():
                span.set_attributes(decision_attributes(runtime, turn, decision))
        self.observer.student_answered(task.name, turn.seconds, turn.confidence)
        student = _student_answer(turn, decision.reason)
        if not decision.escalate or runtime.teacher is None:
            saved = 0.0
            if decision.reason == Reason.CONFIDENT and runtime.teacher is not None:
                saved = self.costs.mean(task.name)  # the call always-teacher would have paid
                self._maybe_audit(runtime, gen, student, caller)
            shown = fit(turn.text, turn.shown, turn.finish_reason, options)
            return _served(student, shown, saved=saved)
        self.observer.escalated(task.name, decision.reason.value)
        ask = teacher_request(task, gen, options)
        try:
            reply, cached = await self._escalate(runtime, ask, deadline, caller)
        except OverBudget as spent:
            message = spent.message()
            self._capture(runtime, gen, student, "student-fallback", decision.reason, message)
            if _on_budget(runtime) == "error":
                raise _budget_error(spent) from None
            fallback = dataclasses.replace(
                student,
                route=Route.STUDENT_FALLBACK,
                teacher_error=message,
                budget_spent=spent.figures.budget.label,
            )
            return _served(fallback, fit(turn.text, turn.shown, turn.finish_reason, options))
        except TeacherError as exc:
            logger.warning("teacher failed for %s (%s): %s", gen.request_id, task.name, exc.message)
            self._capture(runtime, gen, student, "student-fallback", decision.reason, exc.message)
            if task.routing.on_teacher_failure == "error":
                raise
            fallback = dataclasses.replace(
                student, route=Route.STUDENT_FALLBACK, teacher_error=exc.message
            )
            return _served(fallback, fit(turn.text, turn.shown, turn.finish_reason, options))
        if not cached:
            self._capture(runtime, gen, student, "teacher", decision.reason, reply=reply)
        served, _ = await teacher_reply(runtime, gen, reply, options)
        teacher = dataclasses.replace(
            student,
            route=Route.CACHE if cached else Route.TEACHER,
            teacher_model=reply.model,
            teacher_usage=None if cached else (reply.input_tokens, reply.output_tokens),
            teacher_saved_usd=_cost(task, reply) if cached else 0.0,
        )
        return _served(teacher, served, reply.output_tokens)

    async def _without_student(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        deadline: float,
        options: ReplyOptions,
        caller: ClientKey | None,
    ) -> Answer:
        """Cold start: no student has been trained yet, so the teacher answers everything and
        every answer is captured, to train the first one."""
        if runtime.teacher is None:
            raise EngineUnavailable(f"Task {runtime.task.name!r} has no student and no teacher.")
        return await self._teacher_instead(
            runtime, gen, deadline, options, Reason.NO_STUDENT, caller
        )

    async def _teacher_instead(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        deadline: float,
        options: ReplyOptions,
        reason: Reason,
        caller: ClientKey | None,
        *,
        failure: EngineError | None = None,
    ) -> Answer:
        """The teacher answers without a student answer: the student failed and the task
        says so (if the teacher fails too, the client gets the student's error), or there is
        no student yet."""
        task = runtime.task
        if failure is not None:
            logger.warning(
                "student failed for %s (%s); asking the teacher", gen.request_id, task.name
            )
        self.observer.escalated(task.name, reason.value)
        ask = teacher_request(task, gen, options)
        try:
            reply, cached = await self._escalate(runtime, ask, deadline, caller)
        except OverBudget as spent:
            if failure is not None:
                raise failure from None
            raise _budget_error(spent) from None
        except TeacherError:
            if failure is None:
                raise
            raise failure from None
        served, prompt_tokens = await teacher_reply(runtime, gen, reply, options)
        answer = Answer(
            route=Route.CACHE if cached else Route.TEACHER,
            reason=reason,
            text=reply.text,
            tokens=None,
            finish_reason=reply.finish_reason,
            confidence=0.0,
            raw_confidence=0.0,
            student_text="",
            deltas=[],
            prompt_tokens=reply.input_tokens if prompt_tokens is None else prompt_tokens,
            completion_tokens=0,
            teacher_model=reply.model,
            teacher_usage=None if cached else (reply.input_tokens, reply.output_tokens),
            teacher_saved_usd=_cost(task, reply) if cached else 0.0,
        )
        if not cached:
            self._capture(runtime, gen, answer, "teacher", reason.value, reply=reply)
        return _served(answer, served, reply.output_tokens)

    async def _escalate(
        self, runtime: TaskRuntime, ask: TeacherRequest, deadline: float, caller: ClientKey | None
    ) -> tuple[TeacherAnswer, bool]:
        """The teacher's answer to an escalation, and whether it came from the cache (free,
        so served whatever the budgets). A valid answer the teacher gives is stored for the
        next time, off the request path."""
        task = runtime.task
        key = None
        if self.cache is not None and task.caches_teacher and ask.top_logprobs is None:
            scope = caller.tenant_name if caller is not None else ""
            key = cache_key(task, ask, scope if task.cache.scope == "tenant" else "")
            with self.tracing.span("teacher_cache") as span:
                try:
                    hit = await self.cache.get(task.name, key)
                    outcome = "miss" if hit is None else "hit"
                except CacheUnavailable:
                    hit = key = None
                    outcome = "unavailable"
                span.set_attribute("distillgate.cache.outcome", outcome)
            self.observer.cache_looked_up(task.name, outcome)
            if hit is not None:
                return hit, True
        reply = await self._ask(runtime, ask, "escalation", caller, deadline)
        storable = reply.finish_reason == "stop" and task.answer_check.valid(reply.text)
        if key is not None and self.cache is not None and storable:
            stored = self.cache.put(task.name, key, reply, task.cache.ttl_s)
            self._in_background(stored, "cache")
        return reply, False

    async def _ask(
        self,
        runtime: TaskRuntime,
        ask: TeacherRequest,
        purpose: str,
        caller: ClientKey | None,
        deadline: float | None = None,
    ) -> TeacherAnswer:
        """One teacher call, held against the caller's and the task's budgets while it runs
        (``OverBudget`` when one is spent), its cost settled after."""
        task = runtime.task
        hold = await self._hold(runtime, caller, purpose, task.name)
        cost = 0.0
        try:
            key = caller.name if caller is not None else ""
            reply = await ask_teacher(
                runtime, ask, purpose, self.observer, self.tracing, key=key, deadline=deadline
            )
            cost = _cost(task, reply)
            self.costs.record(task.name, cost)
        finally:
            self._settle(hold, cost)
        return reply

    async def _hold(
        self, runtime: TaskRuntime, caller: ClientKey | None, purpose: str, priced: str
    ) -> Hold | None:
        """Hold a call's estimate (the largest recent cost of ``priced``) against the
        caller's and the task's budgets; ``OverBudget``, counted, when one is spent.
        Escalations may spend a budget whole; audits, shadows and judges stop earlier."""
        budgets = budgets_of(runtime.task, caller) if self.budgets is not None else ()
        if self.budgets is None or not budgets:
            return None
        stop_at = 1.0 if purpose == "escalation" else _audits_stop_at(runtime)
        try:
            return await self.budgets.admit(budgets, self.costs.estimate(priced), stop_at)
        except OverBudget as spent:
            self.observer.budget_refused(spent.figures.budget.label, purpose)
            raise

    def _settle(self, hold: Hold | None, cost_usd: float) -> None:
        if hold is not None and self.budgets is not None:
            self.budgets.settle(hold, cost_usd)

    async def _student(
        self, runtime: TaskRuntime, gen: GenerationRequest, deadline: float
    ) -> StudentTurn:
        with self.tracing.span("student") as span:
            turn = await run_student(runtime, gen, deadline)
            if span.is_recording():
                span.set_attributes(student_attributes(runtime, gen, turn, self.tracing))
        return turn

    # -- capture and audit -----------------------------------------------------------------
    def _capture(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        answer: Answer,
        route: CapturedRoute,
        reason: str,
        error: str | None = None,
        *,
        reply: TeacherAnswer | None = None,
        verdict: Verdict | None = None,
    ) -> None:
        if self.recorder is None or not runtime.task.capture.enabled:
            return
        record = capture_record(runtime, gen, answer, route, reason, reply, error, verdict)
        with self.tracing.span("capture", kind=SpanKind.PRODUCER) as span:
            self.recorder.submit(record)  # written to Redis in batches, off the request path
            if span.is_recording():
                span.set_attributes(capture_attributes(record, self.recorder.queued))

    def _in_background(self, work: Coroutine[None, None, None], name: str) -> None:
        """Off the request path; the deployment (its engines and teacher) stays open until
        the work is done, and ``aclose`` waits for it."""
        deployment = self.deployment
        deployment.acquire()
        job = asyncio.create_task(work, name=name)
        self._background.add(job)

        def finished(done: asyncio.Task[None]) -> None:
            self._background.discard(done)
            deployment.release()

        job.add_done_callback(finished)

    def _maybe_audit(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        answer: Answer,
        caller: ClientKey | None,
    ) -> None:
        if self.audits is None or not self.audits.sample(runtime.task.capture.audit_rate):
            return
        audit = self._audit(runtime, gen, answer, caller, self.tracing.cause())
        self._in_background(audit, "audit")

    async def _shadow(
        self,
        candidate: TaskRuntime,
        gen: GenerationRequest,
        caller: ClientKey | None,
        cause: SpanContext | None,
    ) -> None:
        """The candidate answers a request the serving version answered, and the teacher
        too: the record (route ``shadow``, the candidate's decision as its reason) is the
        trial's evidence, and one more teacher-labelled pair."""
        task = candidate.task
        deadline = asyncio.get_running_loop().time() + task.limits.deadline_s
        with self.tracing.linked("shadow", cause, {"gen_ai.request.model": task.name}):
            try:
                turn = await self._student(candidate, gen, deadline)
            except EngineError as exc:
                logger.info("shadow answer of %s failed: %s", gen.request_id, exc.message)
                return
            answer = _student_answer(turn, _judge(candidate, turn, None).reason)
            try:
                reply = await self._ask(candidate, teacher_request(task, gen), "shadow", caller)
            except TeacherError as exc:
                logger.info(
                    "shadow of %s skipped: the teacher failed: %s", gen.request_id, exc.message
                )
                return
            except OverBudget:
                return  # counted (budget_refused); shadows stop before escalations do
            verdict = await self._verdict(candidate, gen, answer, caller)
            self._capture(
                candidate, gen, answer, "shadow", answer.reason.value, reply=reply, verdict=verdict
            )

    async def _audit(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        answer: Answer,
        caller: ClientKey | None,
        cause: SpanContext | None,
    ) -> None:
        with self.tracing.linked("audit", cause, {"gen_ai.request.model": runtime.task.name}):
            await self._audited(runtime, gen, answer, caller)

    async def _audited(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        answer: Answer,
        caller: ClientKey | None,
    ) -> None:
        ask = teacher_request(runtime.task, gen)
        try:
            reply = await self._ask(runtime, ask, "audit", caller)
        except TeacherError as exc:
            logger.info("audit of %s skipped: the teacher failed: %s", gen.request_id, exc.message)
            return
        except OverBudget:
            return  # counted (budget_refused); audits stop before escalations do
        verdict = await self._verdict(runtime, gen, answer, caller)
        agreed: bool | None = answers_agree(answer.text, reply.text, runtime.task.answer_check)
        if runtime.judge is not None:  # free text: the judge decides, not exact agreement
            agreed = verdict.acceptable if verdict is not None else None
        if agreed is not None:
            if self.audits is not None:
                self.audits.observe(runtime.task.name, agreed)
            self.observer.audited(runtime.task.name, runtime.version_label, agreed)
        self._capture(runtime, gen, answer, "audit", "audit", reply=reply, verdict=verdict)

    async def _verdict(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        answer: Answer,
        caller: ClientKey | None,
    ) -> Verdict | None:
        """A free-text task's judge on the student's answer; None without a judge, when it
        fails (counted: a failed judge never makes an answer acceptable) or when a budget
        refuses it. A judge model's call is held against the caller's and the task's
        teacher budgets like an audit's (a program judge is free)."""
        judge, config, task = runtime.judge, runtime.task.judge, runtime.task
        if judge is None or config is None:
            return None
        priced = f"{task.name}:judge"  # its calls' costs, apart from the teacher's
        hold = None
        if config.function is None:  # a judge model; a program judge is free
            try:
                hold = await self._hold(runtime, caller, "judge", priced)
            except OverBudget:
                return None
        question = JudgeRequest(config.rubric, _last_user_turn(gen), answer.student_text)
        cost = 0.0
        try:
            verdict = await judge.judge(question)
            cost = verdict.cost_usd
            self.costs.record(priced, cost)
        except Exception as exc:  # any failure: no verdict
            logger.info("the judge failed on %s: %s", gen.request_id, exc)
            self.observer.judged(task.name, "failed", 0.0)
            return None
        finally:
            self._settle(hold, cost)
        outcome = "accepted" if verdict.acceptable else "rejected"
        self.observer.judged(task.name, outcome, verdict.cost_usd)
        return verdict


def _cost(task: Task, reply: TeacherAnswer) -> float:
    return task.prices.teacher_cost(reply.input_tokens, reply.output_tokens)


def _last_user_turn(gen: GenerationRequest) -> str:
    """The input a judge reads: the last user turn, as calibration judges it."""
    users = [m.content for m in gen.messages if m.role == "user"]
    return users[-1] if users else gen.prompt or ""


def _on_budget(runtime: TaskRuntime) -> str:
    teacher = runtime.task.teacher
    return teacher.on_budget if teacher is not None else "student"


def _audits_stop_at(runtime: TaskRuntime) -> float:
    teacher = runtime.task.teacher
    return teacher.audits_stop_at if teacher is not None else 0.9


def _budget_error(spent: OverBudget) -> BudgetSpent:
    figures = spent.figures
    wait = figures.resets_at - time.time()
    return BudgetSpent(spent.message(), budget=figures.budget.label, retry_after=wait)


def _judge(runtime: TaskRuntime, turn: StudentTurn, forced: Forced) -> Decision:
    """The serving rule on the student's whole answer: valid (complete, in the answer set or
    fitting the schema) and confident enough under the task's calibrator."""
    valid = turn.finish_reason == "stop" and runtime.task.answer_check.valid(turn.text)
    calibration = runtime.calibration
    return decide(
        confidence=turn.confidence,
        threshold=calibration.threshold if calibration else 0.0,
        valid=valid,
        forced=forced,
        has_teacher=runtime.teacher is not None,
    )


def _student_answer(turn: StudentTurn, reason: Reason) -> Answer:
    return Answer(
        route=Route.STUDENT,
        reason=reason,
        text=turn.text,
        tokens=turn.shown,
        finish_reason=turn.finish_reason,
        confidence=turn.confidence,
        raw_confidence=turn.raw_confidence,
        student_text=turn.text,
        deltas=turn.deltas,
        prompt_tokens=turn.deltas[-1].prompt_tokens,
        completion_tokens=0,
        student_latency_s=turn.seconds,
    )


def _served(answer: Answer, reply: Reply, counted: int | None = None, saved: float = 0.0) -> Answer:
    """``answer`` serving ``reply``; its completion tokens are the served tokens, or
    ``counted`` (the teacher's own count) when the text is not known in student tokens;
    ``saved``: what not calling the teacher saved (one replace on the hot path, not two)."""
    completion = len(reply.tokens) if reply.tokens is not None else (counted or 0)
    return dataclasses.replace(
        answer,
        text=reply.text,
        tokens=reply.tokens,
        finish_reason=reply.finish_reason,
        completion_tokens=completion,
        teacher_saved_usd=saved or answer.teacher_saved_usd,
    )
