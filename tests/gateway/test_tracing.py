"""Traces an SRE can follow: a real gateway exports its spans over OTLP/HTTP to a real
receiver (``gateway/testing/otlp.py`` decodes the protobuf wire format), and the span tree
of a request is asserted: the HTTP edge, the student, the decision, the teacher and the
capture, with OpenTelemetry's GenAI attribute names and the gateway's own; the client's
``traceparent`` is joined and passed on to the teacher; audits are traces of their own,
linked to the request; no prompt text is in a span unless a setting allows it (redacted).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from gateway.testing.otlp import OtlpReceiver, ReceivedSpan
from tests.conftest import (
    LABELS,
    Gateway,
    Served,
    serve_in_thread,
    write_calibrator,
    write_task,
)
from tests.redis_server import RedisServer

KEY_ENV = "DISTILLGATE_TRACING_TEACHER_KEY"
PROMPT = "I still have not received my card"
SECRET_PROMPT = "my card for jane.doe@example.com has not arrived"


@pytest.fixture(scope="module")
def teacher() -> Iterator[Served]:
    served = serve_in_thread(create_sim_app(SimulatedAnswers({PROMPT: "card_arrival"}, LABELS)))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    served = serve_in_thread(otlp.app)
    otlp.url = served.url  # type: ignore[attr-defined]
    yield otlp
    served.stop()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def tasks_for(root: Path, student: Path, teacher_url: str) -> Path:
    """``banking77`` (threshold 0.75), ``audited`` (accepts everything, audits every
    answer) and ``redacted`` (capture redacts personal data)."""
    teacher = f'[teacher]\nbase_url = "{teacher_url}"\napi_key_env = "{KEY_ENV}"\n'
    strict = write_calibrator(root / "strict.json", student)
    lenient = write_calibrator(root / "lenient.json", student, threshold=0.0)
    write_task(root, student, "banking77", f'calibrator = "{strict}"\n{teacher}')
    audited = f'calibrator = "{lenient}"\n{teacher}[capture]\naudit_rate = 1.0\n'
    write_task(root, student, "audited", audited)
    redacted = f'calibrator = "{strict}"\n{teacher}[capture]\nredact = true\n'
    write_task(root, student, "redacted", redacted)
    return root


@pytest.fixture(scope="module")
def traced(
    tiny_student, run_gateway, tmp_path_factory, teacher, receiver, redis
) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "test-key")
    mp.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export every 0.1 s, not every 5 s
    tasks = tasks_for(tmp_path_factory.mktemp("traced"), tiny_student.path, teacher.url)
    settings = Settings(
        tasks_dir=tasks,
        allow_force_route=True,
        redis_url=redis.url,
        otlp_endpoint=receiver.url,  # type: ignore[attr-defined]
        access_log=True,
    )
    yield run_gateway(settings)
    mp.undo()


def traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


def ask(gw: Gateway, model: str, text: str, **headers: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r


def of_trace(trace_id: str, *names: str) -> Any:
    def arrived(spans: list[ReceivedSpan]) -> bool:
        seen = {s.name for s in spans if s.trace_id == trace_id}
        return set(names) <= seen

    return arrived


def test_an_escalated_request_is_one_trace_through_every_step(
    traced: Gateway, receiver: OtlpReceiver, teacher: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    header, trace_id, client_span = traceparent()
    r = ask(
        traced, "banking77", PROMPT, traceparent=header, **{"x-distillgate-force-route": "teacher"}
    )
    names = ("POST /v1/chat/completions", "student", "decision", "teacher_cache", "teacher")
    names += ("capture",)
    spans = [s for s in receiver.wait_for(of_trace(trace_id, *names)) if s.trace_id == trace_id]
    by_name = {s.name: s for s in spans}
    edge = by_name["POST /v1/chat/completions"]
    assert edge.kind == "server" and edge.parent_id == client_span  # the client's trace, joined
    assert edge.attributes["http.response.status_code"] == 200
    assert edge.attributes["http.route"] == "/v1/chat/completions"
    assert edge.attributes["distillgate.request_id"] == r.headers["x-request-id"]
    assert edge.attributes["distillgate.route"] == "teacher"
    assert edge.attributes["distillgate.reason"] == "forced"
    assert edge.attributes["gen_ai.request.model"] == "banking77"
    assert edge.resource["service.name"] == "distillgate"
    for name in names[1:]:
        assert by_name[name].parent_id == edge.span_id, name

    student = by_name["student"].attributes
    assert student["gen_ai.operation.name"] == "chat"
    assert student["gen_ai.request.model"] == "banking77"
    assert student["gen_ai.usage.input_tokens"] > 0 and student["gen_ai.usage.output_tokens"] > 0
    assert student["distillgate.student_version"] == r.headers["x-distillgate-student"]
    decision = by_name["decision"].attributes
    assert decision["distillgate.threshold"] == 0.75
    assert 0.0 <= decision["distillgate.confidence"] <= 1.0
    assert decision["distillgate.escalate"] is True
    assert f"{decision['distillgate.confidence']:.4f}" == r.headers["x-distillgate-confidence"]
    assert by_name["teacher_cache"].attributes["distillgate.cache.outcome"] == "miss"
    call = by_name["teacher"]
    assert call.kind == "client"
    assert call.attributes["gen_ai.provider.name"] == "anthropic"
    assert call.attributes["gen_ai.usage.output_tokens"] > 0
    assert call.attributes["distillgate.purpose"] == "escalation"
    capture = by_name["capture"]
    assert (
        capture.kind == "producer" and capture.attributes["distillgate.capture.route"] == "teacher"
    )

    # The teacher was called inside the trace: its traceparent names the teacher span.
    seen = httpx.get(f"{teacher.url}/sim/stats").json()["traceparents"]
    assert f"00-{trace_id}-{call.span_id}-01" in seen
    # No prompt text in any span by default.
    assert not any("received my card" in str(s.attributes) for s in spans)
    # The access log names the request and its trace.
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "gateway.access"]
    line = next(x for x in lines if f"trace_id={trace_id}" in x)
    assert '"POST /v1/chat/completions" 200' in line
    assert f"request_id={r.headers['x-request-id']}" in line


def test_an_audit_is_a_trace_of_its_own_linked_to_its_request(
    traced: Gateway, receiver: OtlpReceiver
) -> None:
    header, trace_id, _ = traceparent()
    r = ask(traced, "audited", PROMPT, traceparent=header)
    assert r.headers["x-distillgate-route"] == "student"
    request = receiver.wait_for(of_trace(trace_id, "POST /v1/chat/completions"))
    edge = next(s for s in request if s.trace_id == trace_id and s.kind == "server")
    assert edge.attributes["distillgate.reason"] == "confident"

    def audited(spans: list[ReceivedSpan]) -> bool:
        return any(s.name == "audit" and (trace_id, edge.span_id) in s.links for s in spans)

    spans = receiver.wait_for(audited)
    audit = next(s for s in spans if s.name == "audit" and (trace_id, edge.span_id) in s.links)
    assert audit.trace_id != trace_id and audit.parent_id == ""  # its own trace

    def under_audit(got: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in got if s.parent_id == audit.span_id]

    done = receiver.wait_for(
        lambda got: {"teacher", "capture"} <= {s.name for s in under_audit(got)}
    )
    children = {s.name: s for s in under_audit(done)}
    assert children["teacher"].attributes["distillgate.purpose"] == "audit"
    assert children["capture"].attributes["distillgate.capture.route"] == "audit"


def test_prompt_text_only_when_allowed_and_redacted_as_capture_is(
    tiny_student,
    run_gateway,
    tmp_path: Path,
    teacher: Served,
    receiver: OtlpReceiver,
    redis: RedisServer,
) -> None:  # type: ignore[no-untyped-def]
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "test-key")
    mp.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    try:
        gw = run_gateway(
            Settings(
                tasks_dir=tasks_for(tmp_path, tiny_student.path, teacher.url),
                redis_url=redis.url,
                otlp_endpoint=receiver.url,  # type: ignore[attr-defined]
                trace_text=True,
            )
        )
        header, trace_id, _ = traceparent()
        ask(gw, "redacted", SECRET_PROMPT, traceparent=header)
    finally:
        mp.undo()
    spans = receiver.wait_for(of_trace(trace_id, "student"))
    student = next(s for s in spans if s.trace_id == trace_id and s.name == "student")
    said = student.attributes["gen_ai.input.messages"]
    assert "has not arrived" in said and "[EMAIL]" in said
    assert "jane.doe@example.com" not in str([s.attributes for s in spans])
    assert "gen_ai.output.messages" in student.attributes


def test_with_traces_off_the_clients_trace_still_reaches_the_teacher(
    tiny_student, run_gateway, tmp_path: Path, teacher: Served
) -> None:  # type: ignore[no-untyped-def]
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "test-key")
    try:
        gw = run_gateway(
            Settings(
                tasks_dir=tasks_for(tmp_path, tiny_student.path, teacher.url),
                allow_force_route=True,
                redis_url="",
            )
        )
        header, _, _ = traceparent()
        ask(gw, "banking77", PROMPT, traceparent=header, **{"x-distillgate-force-route": "teacher"})
        ask(gw, "banking77", PROMPT, **{"x-distillgate-force-route": "teacher"})
    finally:
        mp.undo()
    seen = httpx.get(f"{teacher.url}/sim/stats").json()["traceparents"]
    assert seen[-2:] == [header, None]  # passed on unchanged; none invented
