"""The data path: request → task → student → confidence → accept or escalate → response.

Routes hand over a parsed wire request; serving resolves the task, runs the student,
turns its token logprobs (at the calibrator's temperature) into a confidence, applies
the pure rule in ``routing.py`` and, on escalation, asks the teacher. A teacher failure
answers with the student (``student-fallback``) or an error, per the task's policy.

The client's ``max_tokens`` and ``stop`` do not reach the student: it answers under the
task's limits, the decision is made on that whole answer, and the served answer, the
student's or the teacher's, is then cut to the client's options (``reply.py``). A
teacher's answer is split into the student's tokens (``StudentEngine.score``) so usage and
logprobs mean the same on both routes.

Streaming: the decision needs the whole student answer, so it is generated first (a
bounded answer is a few tokens) and then streamed, student tokens or teacher text; no
content byte leaves before the route is known. Free-text tasks follow the same policy
within their ``max_tokens``. ``answer()`` is also what ``distillgate evaluate`` replays.

Capture: every escalation (answered, or failed over to the student) becomes a
``CaptureRecord`` handed to the recorder, which stores it off the request path. A random
``audit_rate`` share of accepted answers is also put to the teacher in a background task,
never delaying the client; its verdict feeds the live-agreement estimate and its record
is captured with route ``audit``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.api.protocol import ChatCompletionRequest, CompletionRequest, new_id, now
from gateway.api.responses import ChatRenderer, CompletionRenderer, Renderer, usage
from gateway.audit import AuditTracker, answers_agree
from gateway.capture import CapturedRoute, CaptureRecord, CaptureRecorder, new_record_id
from gateway.deployment import Deployment, TaskRuntime
from gateway.engines.base import GenerationRequest, Message, StudentEngine, TokenDelta
from gateway.engines.prompts import check_prompt_tokens
from gateway.errors import (
    DeadlineExceeded,
    EngineError,
    GatewayError,
    InvalidRequest,
    TeacherError,
    TeacherTimeout,
    UnknownTask,
)
from gateway.metrics import Metrics
from gateway.reply import Reply, ReplyOptions, fit
from gateway.routing import Reason, Route, decide
from gateway.tasks import Task
from gateway.teachers.base import TeacherAnswer, TeacherRequest

__all__ = ["Answer", "Serving", "capture_record", "teacher_request"]

logger = logging.getLogger(__name__)

Forced = Literal["student", "teacher"] | None


@dataclass(frozen=True)
class Answer:
    """What is served (``text``, ``tokens``, ``finish_reason``, within the client's limits)
    and what the decision saw (the student's whole answer, ``student_text``/``deltas``)."""

    route: Route
    reason: Reason
    text: str
    tokens: tuple[TokenDelta, ...] | None  # the served text's tokens; None: not known
    finish_reason: str
    confidence: float
    raw_confidence: float
    student_text: str
    deltas: list[TokenDelta]  # the student's own tokens, end token included
    prompt_tokens: int  # the client's prompt as the student reads it, on every route
    completion_tokens: int
    teacher_model: str | None = None
    teacher_error: str | None = None
    teacher_usage: tuple[int, int] | None = None  # the teacher's own (input, output) tokens
    student_latency_s: float = 0.0

    def headers(self, task: str) -> dict[str, str]:
        headers = {
            "x-distillgate-task": task,
            "x-distillgate-route": self.route.value,
            "x-distillgate-confidence": f"{self.confidence:.4f}",
        }
        if self.teacher_usage is not None:
            headers["x-distillgate-teacher-usage"] = (
                f"input_tokens={self.teacher_usage[0]}, output_tokens={self.teacher_usage[1]}"
            )
        return headers


def _teacher_system(task: Task) -> str | None:
    parts = [task.teacher.system] if task.teacher and task.teacher.system else []
    if task.answers:
        if not parts:
            parts.append("Answer with exactly one of the allowed answers below and nothing else.")
        parts.append("Allowed answers:\n" + "\n".join(task.answers))
    return "\n\n".join(parts) or None


def teacher_request(
    task: Task, gen: GenerationRequest, options: ReplyOptions | None = None
) -> TeacherRequest:
    """What the teacher is asked: the turns, the client's system prompt plus the task's,
    within the client's ``max_tokens`` and ``stop`` when ``options`` carries them (an audit
    asks without: it judges the student's whole answer)."""
    turns = gen.messages or (Message("user", gen.prompt or ""),)
    system = "\n\n".join(m.content for m in turns if m.role == "system")
    own = _teacher_system(task)
    limit = task.teacher.max_tokens if task.teacher else task.generation.max_tokens
    options = options or ReplyOptions()
    return TeacherRequest(
        request_id=gen.request_id,
        messages=tuple(m for m in turns if m.role != "system"),
        system="\n\n".join(s for s in (system, own) if s) or None,
        max_tokens=min(limit, options.max_tokens or limit),
        stop=options.stop,
        top_logprobs=options.top_logprobs if options.logprobs else None,
    )


class Serving:
    def __init__(
        self,
        deployment: Deployment | Mapping[str, TaskRuntime],
        *,
        recorder: CaptureRecorder | None = None,
        audits: AuditTracker | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not isinstance(deployment, Deployment):
            deployment = Deployment(runtimes=dict(deployment))
        self.deployment = deployment
        self.recorder = recorder
        self.audits = audits  # None: no audits (offline replays)
        self.metrics = metrics
        self._background: set[asyncio.Task[None]] = set()

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
        return list({id(r.engine): r.engine for r in self.runtimes.values()}.values())

    def runtime(self, name: str) -> TaskRuntime:
        runtime = self.runtimes.get(name)
        if runtime is None:
            raise UnknownTask(
                f"The model {name!r} does not exist; see GET /v1/models.", param="model"
            )
        return runtime

    def models(self) -> dict[str, Any]:
        data = []
        for r in self.runtimes.values():
            entry: dict[str, Any] = {
                "id": r.task.name,
                "object": "model",
                "created": 0,
                "owned_by": "distillgate",
                "description": r.task.description,
                "teacher": r.teacher_label or None,
                "calibrated": r.calibration is not None,
            }
            if r.calibration is not None:
                entry["threshold"] = r.calibration.threshold
            if self.audits is not None and r.teacher is not None and r.task.capture.audit_rate > 0:
                entry["audit"] = self.audits.agreement(r.task.name).to_json()
            data.append(entry)
        return {"object": "list", "data": data}

    # -- the data path -------------------------------------------------------------------
    async def answer(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        *,
        forced: Forced = None,
        options: ReplyOptions | None = None,
    ) -> Answer:
        """Decide on the student's whole answer (``gen`` carries the task's own limits),
        then serve the chosen answer within the client's ``options``."""
        task, calibration = runtime.task, runtime.calibration
        options = options or ReplyOptions()
        if calibration is not None:
            gen = dataclasses.replace(gen, confidence_temperature=calibration.temperature)
        deadline = asyncio.get_running_loop().time() + task.limits.deadline_s
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline), aclosing(runtime.engine.generate(gen)) as s:
                deltas = [d async for d in s]
            if not deltas:
                raise EngineError("the student produced no output")
        except TimeoutError:
            raise DeadlineExceeded(
                f"The student did not answer within task {task.name!r}'s deadline "
                f"({task.limits.deadline_s:g} s)."
            ) from None
        except EngineError as exc:
            if task.routing.on_student_failure != "teacher" or runtime.teacher is None:
                raise
            return await self._teacher_instead(runtime, gen, exc, deadline, options)
        student_s = time.perf_counter() - started
        check_prompt_tokens(deltas[-1].prompt_tokens, gen)  # a remote student counts late
        text = "".join(d.text for d in deltas)
        raw = math.exp(sum(d.logprob for d in deltas))
        confidence = raw
        if calibration is not None:
            scaled = [d.logprob if d.scaled_logprob is None else d.scaled_logprob for d in deltas]
            confidence = calibration.confidence(scaled)
        finish = deltas[-1].finish_reason or "stop"
        valid = finish == "stop" and (task.answer_set is None or text in task.answer_set)
        decision = decide(
            confidence=confidence,
            threshold=calibration.threshold if calibration else 0.0,
            valid=valid,
            forced=forced,
            has_teacher=runtime.teacher is not None,
        )
        if self.metrics is not None:
            self.metrics.child(self.metrics.student_seconds, task.name).observe(student_s)
            self.metrics.child(self.metrics.confidence, task.name).observe(confidence)
        student = Answer(
            route=Route.STUDENT,
            reason=decision.reason,
            text=text,
            tokens=tuple(d for d in deltas if not d.end),
            finish_reason=finish,
            confidence=confidence,
            raw_confidence=raw,
            student_text=text,
            deltas=deltas,
            prompt_tokens=deltas[-1].prompt_tokens,
            completion_tokens=0,
            student_latency_s=student_s,
        )
        if not decision.escalate or runtime.teacher is None:
            if decision.reason == Reason.CONFIDENT and runtime.teacher is not None:
                if self.metrics is not None:
                    self.metrics.observe_accepted(task.name)
                self._maybe_audit(runtime, gen, student)
            return _served(student, fit(text, student.tokens, finish, options))
        if self.metrics is not None:
            self.metrics.escalations.labels(task.name, decision.reason.value).inc()
        ask = teacher_request(task, gen, options)
        try:
            reply = await self._ask_teacher(runtime, ask, "escalation", deadline=deadline)
        except TeacherError as exc:
            logger.warning("teacher failed for %s (%s): %s", gen.request_id, task.name, exc.message)
            self._capture(runtime, gen, student, "student-fallback", decision.reason, error=exc)
            if task.routing.on_teacher_failure == "error":
                raise
            fallback = dataclasses.replace(
                student, route=Route.STUDENT_FALLBACK, teacher_error=exc.message
            )
            return _served(fallback, fit(text, student.tokens, finish, options))
        self._capture(runtime, gen, student, "teacher", decision.reason, reply=reply)
        served, _ = await self._teacher_reply(runtime, gen, reply, options)
        teacher = dataclasses.replace(
            student,
            route=Route.TEACHER,
            teacher_model=reply.model,
            teacher_usage=(reply.input_tokens, reply.output_tokens),
        )
        return _served(teacher, served, reply.output_tokens)

    async def _teacher_reply(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        reply: TeacherAnswer,
        options: ReplyOptions,
    ) -> tuple[Reply, int | None]:
        """The teacher's answer in the student's tokens (so usage and logprobs mean what they
        mean on the student route), fitted to the client's options; and the prompt as the
        student counts it. Logprobs: the teacher's own when it sent them, else the student's
        with teacher forcing. An engine that cannot split text (a remote fleet) leaves the
        tokens unknown."""
        scored = None
        try:
            scored = await runtime.engine.score(
                gen, reply.text, logprobs=options.logprobs and reply.tokens is None
            )
        except GatewayError as exc:  # a broken engine: serve the text, counted by the teacher
            logger.info("could not score the teacher's answer of %s: %s", gen.request_id, exc)
        tokens = scored.tokens if scored is not None else None
        if options.logprobs and reply.tokens is not None:
            tokens = reply.tokens
        prompt_tokens = scored.prompt_tokens if scored is not None else None
        return fit(reply.text, tokens, reply.finish_reason, options), prompt_tokens

    async def _teacher_instead(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        failure: EngineError,
        deadline: float,
        options: ReplyOptions,
    ) -> Answer:
        """The student failed and the task says the teacher answers instead; if the teacher
        fails too, the client gets the student's error."""
        task = runtime.task
        logger.warning("student failed for %s (%s); asking the teacher", gen.request_id, task.name)
        if self.metrics is not None:
            self.metrics.escalations.labels(task.name, Reason.STUDENT_FAILED.value).inc()
        try:
            reply = await self._ask_teacher(
                runtime, teacher_request(task, gen, options), "escalation", deadline=deadline
            )
        except TeacherError:
            raise failure from None
        served, prompt_tokens = await self._teacher_reply(runtime, gen, reply, options)
        answer = Answer(
            route=Route.TEACHER,
            reason=Reason.STUDENT_FAILED,
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
            teacher_usage=(reply.input_tokens, reply.output_tokens),
        )
        self._capture(runtime, gen, answer, "teacher", Reason.STUDENT_FAILED.value, reply=reply)
        return _served(answer, served, reply.output_tokens)

    # -- capture and audit -----------------------------------------------------------------
    def _capture(
        self,
        runtime: TaskRuntime,
        gen: GenerationRequest,
        answer: Answer,
        route: CapturedRoute,
        reason: str,
        *,
        reply: TeacherAnswer | None = None,
        error: TeacherError | None = None,
    ) -> None:
        if self.recorder is None or not runtime.task.capture.enabled:
            return
        self.recorder.submit(capture_record(runtime, gen, answer, route, reason, reply, error))

    def _maybe_audit(self, runtime: TaskRuntime, gen: GenerationRequest, answer: Answer) -> None:
        if self.audits is None or not self.audits.sample(runtime.task.capture.audit_rate):
            return
        deployment = self.deployment
        deployment.acquire()  # its teacher stays open until the audit is done
        job = asyncio.create_task(self._audit(runtime, gen, answer), name="audit")
        self._background.add(job)

        def finished(done: asyncio.Task[None]) -> None:
            self._background.discard(done)
            deployment.release()

        job.add_done_callback(finished)

    async def _ask_teacher(
        self,
        runtime: TaskRuntime,
        request: TeacherRequest,
        purpose: str,
        *,
        deadline: float | None = None,
    ) -> TeacherAnswer:
        """``deadline`` (loop time): what is left of the request's own deadline; when it
        passes first, a ``TeacherTimeout`` that the task's teacher-failure policy handles."""
        assert runtime.teacher is not None
        task = runtime.task
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    reply = await runtime.teacher.complete(request)
            except TimeoutError:
                raise TeacherTimeout(
                    f"the teacher did not answer within the request's deadline "
                    f"({task.limits.deadline_s:g} s)"
                ) from None
        except TeacherError as exc:
            if self.metrics is not None:
                self.metrics.teacher_errors.labels(task.name, exc.code or "teacher_error").inc()
            raise
        if self.metrics is not None:
            prices = task.prices
            self.metrics.observe_teacher_call(
                task.name,
                purpose,
                seconds=reply.latency_s,
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
                cost_usd=(
                    reply.input_tokens * prices.teacher_input
                    + reply.output_tokens * prices.teacher_output
                )
                / 1e6,
            )
        return reply

    async def _audit(self, runtime: TaskRuntime, gen: GenerationRequest, answer: Answer) -> None:
        try:
            reply = await self._ask_teacher(runtime, teacher_request(runtime.task, gen), "audit")
        except TeacherError as exc:
            logger.info("audit of %s skipped: the teacher failed: %s", gen.request_id, exc.message)
            return
        if self.audits is not None:
            self.audits.observe(runtime.task.name, answers_agree(answer.text, reply.text))
        self._capture(runtime, gen, answer, "audit", "audit", reply=reply)

    # -- the wire --------------------------------------------------------------------------
    def _prepare(
        self, body: ChatCompletionRequest | CompletionRequest, request_id: str
    ) -> tuple[TaskRuntime, GenerationRequest, ReplyOptions, Renderer]:
        runtime = self.runtime(body.model)
        task = runtime.task
        limits = task.limits
        renderer: Renderer
        if isinstance(body, ChatCompletionRequest):
            if len(body.messages) > limits.max_messages:
                raise InvalidRequest(
                    f"Task {task.name!r} takes at most {limits.max_messages} messages; "
                    f"the request has {len(body.messages)}.",
                    param="messages",
                    code="too_many_messages",
                )
            gen = GenerationRequest(
                request_id,
                body.to_sampling(task),
                messages=body.to_messages(task),
                max_prompt_tokens=limits.max_prompt_tokens,
            )
            renderer = ChatRenderer(logprobs=body.logprobs)
        else:
            gen = GenerationRequest(
                request_id,
                body.to_sampling(task),
                prompt=body.prompt_text(),
                max_prompt_tokens=limits.max_prompt_tokens,
            )
            renderer = CompletionRenderer(logprobs=body.logprobs is not None)
        chars = (
            len(gen.prompt) if gen.prompt is not None else sum(len(m.content) for m in gen.messages)
        )
        if chars > limits.max_input_chars:
            raise InvalidRequest(
                f"Task {task.name!r} reads at most {limits.max_input_chars} characters of "
                f"input; the request has {chars}.",
                param="messages" if gen.messages else "prompt",
                code="context_length_exceeded",
            )
        return runtime, gen, body.reply_options(task), renderer

    def _envelope(self, task: Task, renderer: Renderer, chunk: bool = False) -> dict[str, Any]:
        prefix = "chatcmpl" if isinstance(renderer, ChatRenderer) else "cmpl"
        kind = renderer.chunk_name if chunk else renderer.object_name
        return {"id": new_id(prefix), "object": kind, "created": now(), "model": task.name}

    async def complete(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        request_id: str,
        forced: Forced = None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        with self.deployment.lease():
            runtime, gen, options, renderer = self._prepare(body, request_id)
            answer = await self.answer(runtime, gen, forced=forced, options=options)
        body_out = {
            **self._envelope(runtime.task, renderer),
            "choices": [renderer.full(answer.text, answer.tokens, answer.finish_reason)],
            "usage": usage(answer.prompt_tokens, answer.completion_tokens),
        }
        return body_out, answer.headers(runtime.task.name)

    async def stream(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        request_id: str,
        forced: Forced = None,
    ) -> tuple[AsyncIterator[str], dict[str, str], int]:
        """The answer's SSE events, its headers and its total tokens (rate limits)."""
        with self.deployment.lease():
            runtime, gen, options, renderer = self._prepare(body, request_id)
            answer = await self.answer(runtime, gen, forced=forced, options=options)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _sse(
            answer, renderer, self._envelope(runtime.task, renderer, chunk=True), include_usage
        )
        tokens = answer.prompt_tokens + answer.completion_tokens
        return events, answer.headers(runtime.task.name), tokens


def capture_record(
    runtime: TaskRuntime,
    gen: GenerationRequest,
    answer: Answer,
    route: CapturedRoute,
    reason: str,
    reply: TeacherAnswer | None = None,
    error: TeacherError | None = None,
) -> CaptureRecord:
    """The record of one escalation or audit, redacted when the task asks for it."""
    turns = gen.messages or (Message("user", gen.prompt or ""),)
    messages = [{"role": m.role, "content": m.content} for m in turns]
    student, teacher = answer.student_text, reply.text if reply else None
    redacted: tuple[str, ...] | None = None
    redactor = runtime.redactor
    if redactor is not None:
        kinds: set[str] = set()

        def scrub(text: str) -> str:
            clean, found = redactor.redact(text)
            kinds.update(found)
            return clean

        messages = [{**m, "content": scrub(m["content"])} for m in messages]
        student = scrub(student)
        teacher = scrub(teacher) if teacher is not None else None
        redacted = tuple(sorted(kinds))
    usage_counts = {
        "student_prompt_tokens": answer.prompt_tokens,
        "student_completion_tokens": len(answer.deltas),
    }
    latency = {"student": answer.student_latency_s}
    if reply is not None:
        usage_counts |= {"teacher_input_tokens": reply.input_tokens}
        usage_counts |= {"teacher_output_tokens": reply.output_tokens}
        latency["teacher"] = reply.latency_s
    calibration = runtime.calibration
    return CaptureRecord(
        record_id=new_record_id(),
        request_id=gen.request_id,
        task=runtime.task.name,
        route=route,
        reason=reason,
        messages=tuple(messages),
        student_answer=student,
        raw_confidence=answer.raw_confidence,
        confidence=answer.confidence,
        threshold=calibration.threshold if calibration else None,
        student_fingerprint=runtime.student_fingerprint,
        calibrator_version=calibration.version_id if calibration else None,
        teacher_answer=teacher,
        teacher_model=reply.model if reply else None,
        teacher_error=error.message if error else None,
        teacher_finish_reason=reply.finish_reason if reply else None,
        usage=usage_counts,
        latency_s=latency,
        redacted=redacted,
    )


def _served(answer: Answer, reply: Reply, counted: int | None = None) -> Answer:
    """``answer`` serving ``reply``; its completion tokens are the served tokens, or
    ``counted`` (the teacher's own count) when the text is not known in student tokens."""
    completion = len(reply.tokens) if reply.tokens is not None else (counted or 0)
    return dataclasses.replace(
        answer,
        text=reply.text,
        tokens=reply.tokens,
        finish_reason=reply.finish_reason,
        completion_tokens=completion,
    )


async def _sse(
    answer: Answer, renderer: Renderer, envelope: dict[str, Any], include_usage: bool
) -> AsyncIterator[str]:
    """OpenAI's event order: an opening (chat), one event per served token (the whole text
    at once when its tokens are not known), a closing event with the finish reason and no
    content, then the usage event when asked for, then ``[DONE]``."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        data = {**envelope, "choices": choices, **extra}
        if include_usage and "usage" not in extra and renderer.chunk_usage:
            data["usage"] = None
        return f"data: {orjson.dumps(data).decode()}\n\n"

    opening = renderer.opening()
    if opening is not None:
        yield event([opening])
    if answer.tokens is not None:
        for token in answer.tokens:
            yield event([renderer.piece(token.text, token)])
    elif answer.text:
        yield event([renderer.piece(answer.text, None)])
    yield event([renderer.closing(answer.finish_reason)])
    if include_usage:
        yield event([], usage=usage(answer.prompt_tokens, answer.completion_tokens))
    yield "data: [DONE]\n\n"
