"""A fake OpenAI-compatible model server, as cheap as a server can be, for overhead runs.

Raw asyncio protocol with httptools parsing on uvloop: no framework, so what is measured
is whatever sits in front of it. ``POST /v1/chat/completions`` answers one fixed label,
tokenised into a few tokens, with the chosen and top-k logprobs when the request asks for
them (``logprobs``/``top_logprobs``) and as an SSE stream when it sets ``stream``;
``GET /health`` answers 200, and ``POST /v1/traces`` too (an OTLP sink for traced
gateways). Responses are built once per request shape and cached.

    python -m benchmarks.upstream --port 9000 [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, ClassVar

import httptools
import orjson

ANSWER = ("card", "_", "arrival", "<|end|>")  # what the demo student answers, token by token
LOGPROBS = (-0.0098, -3.6e-06, -0.0056, -1.1e-06)
ALTERNATIVES = ("activate", "what", "delivery", "declined", "top", "exchange", "pin", "lost")


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def _logprobs(k: int) -> list[dict[str, Any]]:
    out = []
    for token, lp in zip(ANSWER, LOGPROBS, strict=True):
        top = [_entry(token, lp)]
        top += [_entry(f"{ALTERNATIVES[i % 8]}{i}", lp - 6.0 - i) for i in range(k - 1)]
        out.append({**_entry(token, lp), "top_logprobs": top[:k]})
    return out


def _content(i: int) -> str:
    return ANSWER[i] if ANSWER[i] != "<|end|>" else ""


def chat_response(model: str, logprobs: bool, k: int) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "card_arrival"},
                "logprobs": {"content": _logprobs(k)} if logprobs else None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12},
    }
    return orjson.dumps(body)


def chat_stream(model: str, logprobs: bool, k: int) -> list[bytes]:
    """One SSE event per token, then the finish, the usage and [DONE]."""
    lps = _logprobs(k)
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": choices, **extra}) + b"\n\n"

    events = [event([{"index": 0, "delta": {"role": "assistant", "content": ""}}])]
    for i in range(len(ANSWER)):
        events.append(
            event(
                [
                    {
                        "index": 0,
                        "delta": {"content": _content(i)},
                        "logprobs": {"content": [lps[i]]} if logprobs else None,
                        "finish_reason": "stop" if i == len(ANSWER) - 1 else None,
                    }
                ]
            )
        )
    events.append(event([], usage={"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}))
    events.append(b"data: [DONE]\n\n")
    return events


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.body: list[bytes] = []
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class UpstreamProtocol(asyncio.Protocol):
    cache: ClassVar[dict[tuple[str, bool, int, bool], Any]] = {}

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.transport: asyncio.Transport | None = None
        self.request = _Request()
        self.parser = httptools.HttpRequestParser(self.request)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, b'{"error":{"message":"bad request"}}')
            return
        if self.request.done:
            request, self.request = self.request, _Request()
            self.parser = httptools.HttpRequestParser(self.request)
            if self.delay_s:
                asyncio.get_running_loop().call_later(self.delay_s, self._answer, request)
            else:
                self._answer(request)

    def _answer(self, request: _Request) -> None:
        if request.url.startswith(b"/health") or request.url == b"/v1/models":
            self._send(200, b'{"status":"ok"}')
            return
        if request.url == b"/v1/traces":  # an empty ExportTraceServiceResponse: all accepted
            self._send(200, b"")
            return
        try:
            req = orjson.loads(b"".join(request.body))
        except orjson.JSONDecodeError:
            self._send(400, b'{"error":{"message":"invalid JSON"}}')
            return
        logprobs = bool(req.get("logprobs"))
        k = int(req.get("top_logprobs") or 0)
        key = (str(req.get("model", "")), logprobs, k, bool(req.get("stream")))
        cached = self.cache.get(key)
        if key[3]:
            if cached is None:
                cached = self.cache[key] = chat_stream(key[0], logprobs, k)
            self._send_stream(cached)
        else:
            if cached is None:
                cached = self.cache[key] = chat_response(key[0], logprobs, k)
            self._send(200, cached)

    def _send(self, status: int, body: bytes) -> None:
        assert self.transport is not None
        reason = b"OK" if status == 200 else b"Bad Request"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (status, reason, len(body))
            + body
        )

    def _send_stream(self, events: list[bytes]) -> None:
        assert self.transport is not None
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
        self.transport.write(head + b"".join(chunks) + b"0\r\n\r\n")


async def serve(host: str, port: int, delay_s: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(delay_s), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="simulated model time")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
