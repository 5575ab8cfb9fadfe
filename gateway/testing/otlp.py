"""A real OTLP/HTTP trace receiver: it decodes what an OpenTelemetry exporter sends
(``ExportTraceServiceRequest`` in protobuf, gzip or not) into plain spans. The trace test's
collector, and a terminal's: ``python -m gateway.testing.otlp --port 4318`` prints each
trace as a tree (with ``DISTILLGATE_OTLP_ENDPOINT=http://127.0.0.1:4318``).

    python -m gateway.testing.otlp [--host 127.0.0.1] [--port 4318]
"""

from __future__ import annotations

import argparse
import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

__all__ = ["OtlpReceiver", "ReceivedSpan"]

KINDS = {
    SpanProto.SPAN_KIND_INTERNAL: "internal",
    SpanProto.SPAN_KIND_SERVER: "server",
    SpanProto.SPAN_KIND_CLIENT: "client",
    SpanProto.SPAN_KIND_PRODUCER: "producer",
    SpanProto.SPAN_KIND_CONSUMER: "consumer",
}


@dataclass
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id)
    status: int = 0  # 2: error
    start_ns: int = 0
    end_ns: int = 0


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


class OtlpReceiver:
    """``on_spans``: called with each export's spans, as they arrive."""

    def __init__(self, on_spans: Callable[[list[ReceivedSpan]], None] | None = None) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.on_spans = on_spans
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.post("/v1/traces")(self._export)

    async def _export(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.headers["content-type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=KINDS.get(span.kind, "unspecified"),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            resource=resource,
                            links=[
                                (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ],
                            status=span.status.code,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.spans.extend(received)
            self.requests += 1
        if self.on_spans is not None:
            self.on_spans(received)
        payload = ExportTraceServiceResponse().SerializeToString()
        return Response(payload, media_type="application/x-protobuf")

    def wait_for(self, predicate: Any, timeout_s: float = 30.0) -> list[ReceivedSpan]:
        """The spans received, once ``predicate(spans)`` holds (batches arrive late)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"spans never arrived; got {[s.name for s in spans]}")
            time.sleep(0.05)


def tree(spans: list[ReceivedSpan], root: ReceivedSpan) -> list[str]:
    """``root`` and what it holds, one line per span: the offset from the root's start, the
    duration, and the GenAI and gateway attributes (no text)."""
    children: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    lines: list[str] = []

    def walk(span: ReceivedSpan, depth: int) -> None:
        shown = {
            k.removeprefix("distillgate."): v
            for k, v in span.attributes.items()
            if k.startswith(("gen_ai.", "distillgate.", "http.response"))
            and not k.endswith("messages")
        }
        facts = " ".join(f"{k}={_short(v)}" for k, v in sorted(shown.items()))
        offset = (span.start_ns - root.start_ns) / 1e6
        took = (span.end_ns - span.start_ns) / 1e6
        name = "  " * depth + span.name
        lines.append(f"{name:<34} +{offset:7.2f} ms {took:8.2f} ms  {facts}")
        for child in sorted(children.get(span.span_id, ()), key=lambda s: s.start_ns):
            walk(child, depth + 1)

    walk(root, 0)
    return lines


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    import uvicorn

    receiver = OtlpReceiver()

    def show(batch: list[ReceivedSpan]) -> None:
        """A trace is printed when its root arrives: a root span ends after its children."""
        ours = {s.span_id for s in receiver.spans}
        for root in (s for s in batch if s.parent_id == "" or s.parent_id not in ours):
            if root.kind != "server" and not root.links and root.parent_id:
                continue  # a child whose parent is still open
            same = [s for s in receiver.spans if s.trace_id == root.trace_id]
            link = f"  (linked to {root.links[0][0]})" if root.links else ""
            print(f"trace {root.trace_id}{link}", flush=True)
            print("\n".join(tree(same, root)) + "\n", flush=True)

    receiver.on_spans = show
    uvicorn.run(receiver.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
