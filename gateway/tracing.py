"""OpenTelemetry traces: one per request, through the student, the decision, the teacher and
the capture, so an SRE can follow one slow or wrong request.

Off unless an OTLP endpoint is configured (``DISTILLGATE_OTLP_ENDPOINT``); then a share of
requests (``DISTILLGATE_TRACE_SAMPLE_RATE``; a client's ``traceparent`` decides for its
own request, and an audit or shadow answer is traced when its request was) is exported over
OTLP/HTTP in batches, off the request path. A request not sampled makes no span at all,
so a low rate costs what it says. A ``Tracing`` is
handed to the parts that make spans rather than set as OpenTelemetry's global provider, so
every gateway in a process keeps its own. Off, a span is a shared no-op.

The client's W3C ``traceparent`` is honoured either way: the request's spans join its trace,
and the teacher call carries it on (``trace_headers``), so the teacher's own traces join too.

Attribute names are OpenTelemetry's where they exist (HTTP, and the GenAI conventions'
``gen_ai.*``) and ``distillgate.*`` for the gateway's own. No prompt or answer text goes
into a span unless ``DISTILLGATE_TRACE_TEXT`` allows it, and then redacted as capture is.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanContext, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from gateway.settings import Settings

__all__ = [
    "SpanContext",
    "SpanKind",
    "Tracing",
    "current_trace_id",
    "messages_attribute",
    "open_tracing",
    "trace_headers",
]

_PROPAGATOR = TraceContextTextMapPropagator()
_NO_SPAN: AbstractContextManager[Span] = contextlib.nullcontext(INVALID_SPAN)


class Tracing:
    """Spans for the gateway's steps; with no ``tracer`` (tracing off) every span is the
    shared no-op, so a caller never branches: it sets attributes when ``span.is_recording()``."""

    def __init__(
        self,
        tracer: Tracer | None = None,
        *,
        sample_rate: float = 1.0,
        record_text: bool = False,
        provider: TracerProvider | None = None,
    ) -> None:
        self.tracer = tracer
        self.sample_rate = sample_rate  # of requests that come without a traceparent
        self.record_text = record_text  # prompt and answer text in spans (redacted)
        self._provider = provider
        self._rng = random.Random()

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def span(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> AbstractContextManager[Span]:
        """A child of the current span (the request's), current while it is open; a no-op
        in a request that is not sampled, as cheap as tracing off."""
        if self.tracer is None or not trace.get_current_span().is_recording():
            return _NO_SPAN
        return self.tracer.start_as_current_span(name, kind=kind, attributes=attributes)

    def linked(
        self, name: str, cause: SpanContext | None, attributes: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[Span]:
        """A span of a trace of its own, linked to the request that caused it: audits and
        shadow answers run after the request's trace has ended. Traced when the request was."""
        if self.tracer is None or cause is None or not cause.trace_flags.sampled:
            return _NO_SPAN
        root = otel_context.Context()
        return self.tracer.start_as_current_span(
            name, context=root, links=[Link(cause)], attributes=attributes
        )

    def current_span(self) -> Span:
        return INVALID_SPAN if self.tracer is None else trace.get_current_span()

    @staticmethod
    def cause() -> SpanContext | None:
        """The current span's context, to link work it leaves behind to it."""
        context = trace.get_current_span().get_span_context()
        return context if context.is_valid else None

    def request_span(
        self, headers: Sequence[tuple[bytes, bytes]], name: Callable[[], str]
    ) -> AbstractContextManager[Span] | None:
        """The request's own span (the HTTP edge), a child of the client's ``traceparent``
        when it sent one; off, the client's trace is still made current, for the teacher.
        None when the request needs neither: the edge passes it straight on."""
        sent = any(key == b"traceparent" for key, _ in headers)
        parent = _client_context(headers) if sent else None
        if self.tracer is None:
            return None if parent is None else _attached(parent)
        if parent is None and self._rng.random() >= self.sample_rate:
            return None  # not sampled: no span at all, and no cost
        return self.tracer.start_as_current_span(name(), context=parent, kind=SpanKind.SERVER)

    def shutdown(self) -> None:
        """Export what is still queued, then stop: on the way out of serving."""
        if self._provider is not None:
            self._provider.shutdown()


def open_tracing(settings: Settings) -> Tracing:
    """Tracing as the settings ask: off without an OTLP endpoint."""
    if not settings.otlp_endpoint:
        return Tracing()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    __version__ = version("distillgate")
    resource = Resource.create(
        {"service.name": settings.otel_service_name, "service.version": __version__}
    )
    # Requests are sampled at the edge (``request_span``): a span that starts is kept, and
    # a client's traceparent decides for its request.
    provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    tracer = provider.get_tracer("distillgate", __version__)
    return Tracing(
        tracer,
        sample_rate=settings.trace_sample_rate,
        record_text=settings.trace_text,
        provider=provider,
    )


def trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span, for an outgoing call; empty
    outside any trace."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def current_trace_id() -> str | None:
    """The current trace's id as hex (what a trace backend searches by), if any."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def messages_attribute(messages: Iterable[tuple[str, str]]) -> str:
    """(role, text) messages as the GenAI conventions' ``gen_ai.input.messages`` and
    ``gen_ai.output.messages`` carry them."""
    return json.dumps(
        [{"role": role, "parts": [{"type": "text", "content": text}]} for role, text in messages]
    )


def _client_context(headers: Iterable[tuple[bytes, bytes]]) -> otel_context.Context | None:
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in (b"traceparent", b"tracestate")
    }
    if "traceparent" not in carrier:
        return None
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


@contextlib.contextmanager
def _attached(context: otel_context.Context) -> Iterator[Span]:
    token = otel_context.attach(context)
    try:
        yield trace.get_current_span(context)
    finally:
        otel_context.detach(token)
