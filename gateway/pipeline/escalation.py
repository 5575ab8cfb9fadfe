"""Escalation: what the teacher is asked, the call itself, and its answer in student tokens.

The teacher is asked the client's turns plus the task's own instructions (the allowed
answers, for a label task), within the client's ``max_tokens`` and ``stop``; an audit asks
without them, since it judges the student's whole answer. The call is bounded by what is
left of the request's deadline. The answer is then split into the student's tokens
(``StudentEngine.score``), so usage and logprobs mean the same as on the student route.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.engines.base import GenerationRequest, Message
from gateway.errors import GatewayError, TeacherError, TeacherTimeout
from gateway.pipeline.base import PipelineObserver
from gateway.pipeline.deployment import TaskRuntime
from gateway.pipeline.reply import Reply, ReplyOptions, fit
from gateway.pipeline.trace import teacher_attributes, teacher_reply_attributes
from gateway.tasks import Task
from gateway.teachers.base import TeacherAnswer, TeacherRequest
from gateway.tracing import SpanKind, Tracing

__all__ = ["ask_teacher", "teacher_reply", "teacher_request"]

logger = logging.getLogger(__name__)


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
    within the client's ``max_tokens`` and ``stop`` when ``options`` carries them."""
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
        json_schema=task.answer_schema,
    )


async def ask_teacher(
    runtime: TaskRuntime,
    request: TeacherRequest,
    purpose: str,
    observer: PipelineObserver,
    tracing: Tracing,
    *,
    key: str = "",
    deadline: float | None = None,
) -> TeacherAnswer:
    """``deadline`` (loop time): what is left of the request's own deadline; when it
    passes first, a ``TeacherTimeout`` that the task's teacher-failure policy handles.
    The call is a span; the teacher's client sends its ``traceparent`` on."""
    task = runtime.task
    with tracing.span("teacher", kind=SpanKind.CLIENT) as span:
        if span.is_recording():
            span.set_attributes(teacher_attributes(task, request, purpose))
        try:
            reply = await _ask(runtime, request, observer, deadline)
        except TeacherError as exc:
            span.set_attribute("error.type", exc.code or "teacher_error")
            raise
        if span.is_recording():
            span.set_attributes(teacher_reply_attributes(task, reply))
    observer.teacher_answered(
        task.name,
        purpose,
        key=key,
        seconds=reply.latency_s,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        cost_usd=task.prices.teacher_cost(reply.input_tokens, reply.output_tokens),
    )
    return reply


async def _ask(
    runtime: TaskRuntime,
    request: TeacherRequest,
    observer: PipelineObserver,
    deadline: float | None,
) -> TeacherAnswer:
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
        misfit = task.answer_check.problem(reply.text) if request.json_schema else None
        if misfit is not None:
            # Asked for the structure and did not give it: the teacher-failure policy decides.
            raise TeacherError(
                f"the teacher's answer does not fit task {task.name!r}'s schema ({misfit})"
            )
    except TeacherError as exc:
        observer.teacher_failed(task.name, exc.code or "teacher_error")
        raise
    return reply


async def teacher_reply(
    runtime: TaskRuntime, gen: GenerationRequest, reply: TeacherAnswer, options: ReplyOptions
) -> tuple[Reply, int | None]:
    """The teacher's answer in the student's tokens, fitted to the client's options; and
    the prompt as the student counts it. Logprobs: the teacher's own when it sent them, else
    the student's with teacher forcing. An engine that cannot split text (a remote fleet)
    leaves the tokens unknown."""
    scored = None
    try:
        if runtime.engine is not None:  # None: no student yet (cold start)
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
