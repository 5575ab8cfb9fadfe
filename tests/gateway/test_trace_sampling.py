"""Sampling at the edge: a request not sampled makes no span at all; a client's
``traceparent`` decides for its request; audits and shadows follow their request."""

from __future__ import annotations

import secrets

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

from gateway.tracing import Tracing, trace_headers


def tracing(rate: float) -> tuple[Tracing, InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return Tracing(provider.get_tracer("test"), sample_rate=rate), exported


def client(sampled: bool) -> tuple[list[tuple[bytes, bytes]], str]:
    trace_id = secrets.token_hex(16)
    header = f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"
    return [(b"traceparent", header.encode())], trace_id


def request(t: Tracing, headers: list[tuple[bytes, bytes]]) -> bool:
    """One request's spans; whether the edge opened one."""
    opened = t.request_span(headers, lambda: "POST /v1/chat/completions")
    if opened is None:
        return False
    with opened:
        with t.span("student"):
            pass
        with t.linked("audit", t.cause()):
            pass
    return True


def test_a_rate_of_zero_makes_no_span_and_one_traces_everything() -> None:
    never, none_exported = tracing(0.0)
    assert not any(request(never, []) for _ in range(50))
    assert none_exported.get_finished_spans() == ()
    always, exported = tracing(1.0)
    assert request(always, [])
    assert [s.name for s in exported.get_finished_spans()] == [
        "student",
        "audit",
        "POST /v1/chat/completions",
    ]


def test_a_share_of_requests_is_traced() -> None:
    some, exported = tracing(0.2)
    traced = sum(request(some, []) for _ in range(2000))
    assert 300 < traced < 500  # 400 expected; 6 standard deviations either side
    assert len(exported.get_finished_spans()) == 3 * traced


def test_the_clients_traceparent_decides_for_its_request() -> None:
    t, exported = tracing(0.0)
    headers, trace_id = client(sampled=True)
    assert request(t, headers)
    spans = exported.get_finished_spans()
    assert {format(s.context.trace_id, "032x") for s in spans if s.name != "audit"} == {trace_id}
    exported.clear()
    unsampled, _ = client(sampled=False)
    assert request(t, unsampled)  # its trace is current (for the teacher), nothing recorded
    assert exported.get_finished_spans() == ()


def test_off_the_clients_trace_is_carried_to_the_teacher_and_none_is_invented() -> None:
    off = Tracing()
    headers, trace_id = client(sampled=True)
    opened = off.request_span(headers, lambda: "unused")
    assert opened is not None
    with opened:
        assert trace_id in trace_headers()["traceparent"]
    assert off.request_span([(b"host", b"x")], lambda: "unused") is None
    assert trace_headers() == {}
