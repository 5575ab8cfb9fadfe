"""A stand-in for a frontier teacher, over real HTTP: Anthropic's Messages API
(``POST /v1/messages``, whole or streamed as its SSE events) and OpenAI's chat
completions (``POST /v1/chat/completions``).

It answers prompts it knows with their reference answer (and, given a judge function, a
judge model's question with that function's verdict), at a configurable accuracy
(deterministically per prompt, so replays agree), and a prompt it does not know with
the answer of its most similar known prompt (word overlap), after a configurable
latency; and it
injects faults on demand: 429, 529, 500, a timeout, a stream that stalls mid-way, or a
200 whose body is not the protocol's (``garbage``).
``POST /sim/faults {"mode": "529", "count": 3}`` arms the next 3 requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gateway.examples import Example
from gateway.judges.model import read_question
from gateway.judges.program import ProgramJudge
from gateway.teachers.base import TeacherAnswer, TeacherRequest
from gateway.teachers.factory import JudgeFunction, RunningSimulator

__all__ = [
    "SimulatedAnswers",
    "SimulatedTeacher",
    "create_sim_app",
    "simulated_tokens",
    "start_simulator",
]

FaultMode = Literal["429", "529", "500", "timeout", "stall", "garbage"]
_GARBAGE = b'{"id": "msg_x", "type": "message", "content": "\x00 not a list", "usage": null'


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", text.lower()))


def _fraction(text: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class SimulatedAnswers:
    """The teacher's knowledge: reference answers, right with probability ``accuracy``."""

    references: dict[str, str]
    answer_set: tuple[str, ...] = ()
    accuracy: float = 1.0
    model: str = "teacher-sim"
    judge: JudgeFunction | None = None  # a judge model's question gets this one's verdict
    _index: dict[str, list[int]] | None = field(default=None, repr=False)
    _words: list[tuple[frozenset[str], str]] = field(default_factory=list, repr=False)

    @classmethod
    def from_examples(
        cls, examples: Iterable[Example], *, accuracy: float = 1.0
    ) -> SimulatedAnswers:
        refs = {ex.chat()[-1]["content"].strip(): ex.answer for ex in examples}
        return cls(refs, tuple(sorted(set(refs.values()))), accuracy)

    def answer(self, prompt: str) -> str:
        key = prompt.strip()
        if self.judge is not None and (asked := read_question(key)) is not None:
            verdict = ProgramJudge(self.judge).verdict(*asked)
            return json.dumps({"acceptable": verdict.acceptable, "reason": verdict.reason})
        right = self.references.get(key) or self._nearest(key)
        pool = [a for a in self.answer_set if a != right] or ["unknown"]
        if right is not None and _fraction(key, "correct") < self.accuracy:
            return right
        return pool[int(_fraction(key, "wrong") * len(pool))]

    def __post_init__(self) -> None:
        self._index = {}
        self._words = [(_words(p), a) for p, a in self.references.items()]
        for i, (words, _) in enumerate(self._words):
            for w in words:
                self._index.setdefault(w, []).append(i)

    def _nearest(self, prompt: str) -> str | None:
        """The answer of the known prompt sharing the most words (Jaccard), if any."""
        assert self._index is not None
        query = _words(prompt)
        overlap: dict[int, int] = {}
        for w in query:
            for i in self._index.get(w, ()):
                overlap[i] = overlap.get(i, 0) + 1
        if not overlap:
            return None
        best = max(overlap, key=lambda i: overlap[i] / len(query | self._words[i][0]))
        return self._words[best][1]


_CHARS_PER_TOKEN = 4  # the simulator's notion of a token, for usage and max_tokens


def simulated_tokens(text: str) -> int:
    """The tokens the simulator bills for ``text`` (what a test needs to price a call)."""
    return len(text) // _CHARS_PER_TOKEN + 1


def within(text: str, max_tokens: int | None, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` as a real API would return it under ``max_tokens`` and ``stop`` (the stop
    sequence left out), and whether it was cut at the token limit."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    if max_tokens is not None and len(text) > max_tokens * _CHARS_PER_TOKEN:
        return text[: max_tokens * _CHARS_PER_TOKEN], True
    return text, False


def _stops(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(s) for s in value or ()]


class SimulatedTeacher:
    """The simulator in-process, for offline replays (``distillgate evaluate``)."""

    def __init__(self, answers: SimulatedAnswers) -> None:
        self.answers = answers
        self.name = f"sim:{answers.model}"

    async def complete(self, request: TeacherRequest) -> TeacherAnswer:
        text, cut = within(
            self.answers.answer(request.messages[-1].content), request.max_tokens, request.stop
        )
        prompt_chars = sum(len(m.content) for m in request.messages) + len(request.system or "")
        return TeacherAnswer(
            text,
            self.answers.model,
            prompt_chars // _CHARS_PER_TOKEN + 1,
            simulated_tokens(text),
            0.0,
            finish_reason="length" if cut else "stop",
        )

    async def aclose(self) -> None:
        return None


@dataclass
class _Faults:
    mode: FaultMode | None = None
    remaining: int = 0  # -1: until cleared
    served: dict[str, int] = field(default_factory=dict)
    traceparents: list[str | None] = field(default_factory=list)  # the latest calls' own

    def take(self) -> FaultMode | None:
        if self.mode is None or self.remaining == 0:
            return None
        if self.remaining > 0:
            self.remaining -= 1
        return self.mode


def _last_user(messages: Sequence[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _anthropic_error(status: int, message: str | None = None) -> JSONResponse:
    kind = {
        400: "invalid_request_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")
    text = message or f"simulated {status}"
    body = {"type": "error", "error": {"type": kind, "message": text}}
    return JSONResponse(
        body, status_code=status, headers={"retry-after": "0"} if status == 429 else {}
    )


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool a Messages request forces (``tool_choice`` of type ``tool``), if any."""
    choice = body.get("tool_choice") or {}
    if choice.get("type") != "tool":
        return None
    return next((t for t in body.get("tools") or () if t.get("name") == choice.get("name")), None)


def _tool_use(tool: dict[str, Any], text: str) -> dict[str, Any]:
    """The known answer (JSON text) as the tool's input, under the tool's one required key
    when its input schema wraps the answer (a root that is not an object) and the answer
    does not already carry it, as a model following that schema would."""
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    schema = tool.get("input_schema") or {}
    required = schema.get("required") or []
    wraps = len(required) == 1 and set(schema.get("properties") or {}) == set(required)
    if wraps and not (isinstance(value, dict) and required[0] in value):
        value = {required[0]: value}
    return {
        "type": "tool_use",
        "id": f"toolu_{uuid.uuid4().hex[:24]}",
        "name": tool["name"],
        "input": value,
    }


def _openai_error(status: int) -> JSONResponse:
    body = {
        "error": {
            "message": f"simulated {status}",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    return JSONResponse(
        body, status_code=status, headers={"retry-after": "0"} if status == 429 else {}
    )


def _sim_logprobs(text: str, top: int) -> dict[str, Any]:
    """Logprobs in OpenAI's shape over the simulator's tokens: it is sure of every one."""
    pieces = [text[i : i + _CHARS_PER_TOKEN] for i in range(0, len(text), _CHARS_PER_TOKEN)]

    def entry(piece: str) -> dict[str, Any]:
        return {"token": piece, "logprob": 0.0, "bytes": list(piece.encode())}

    return {
        "content": [{**entry(p), "top_logprobs": [entry(p)] if top else []} for p in pieces],
        "refusal": None,
    }


def create_sim_app(
    answers: SimulatedAnswers, *, latency_s: float = 0.0, timeout_s: float = 3600.0
) -> FastAPI:
    """``timeout_s``: how long a 'timeout' or 'stall' fault holds the request.

    Long because it speaks two providers' wire protocols, whole and streamed, with faults.
    """
    app = FastAPI(title="distillgate teacher simulator", docs_url=None, redoc_url=None)
    faults = _Faults()
    app.state.faults = faults

    def usage(prompt: str, text: str) -> tuple[int, int]:
        return simulated_tokens(prompt), simulated_tokens(text)

    async def before(api: str, request: Request) -> FaultMode | None:
        faults.served[api] = faults.served.get(api, 0) + 1
        faults.traceparents = [*faults.traceparents[-99:], request.headers.get("traceparent")]
        fault = faults.take()
        if fault == "timeout":
            await asyncio.sleep(timeout_s)
        elif latency_s:
            await asyncio.sleep(latency_s)
        return fault

    @app.post("/sim/faults")
    async def arm(request: Request) -> dict[str, Any]:
        body = await request.json()
        faults.mode, faults.remaining = body.get("mode"), int(body.get("count", 1))
        return {"mode": faults.mode, "remaining": faults.remaining}

    @app.get("/sim/stats")
    async def stats() -> dict[str, Any]:
        return {"served": faults.served, "traceparents": faults.traceparents}

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        """Long because Anthropic's stream is six event kinds, written out as the protocol shows
        them."""
        body = await request.json()
        fault = await before("anthropic", request)
        if fault in ("429", "529", "500"):
            return _anthropic_error(int(fault))
        if fault == "garbage":
            return Response(_GARBAGE, media_type="application/json")
        prompt = _last_user(body.get("messages", []))
        text, cut = within(
            answers.answer(prompt), body.get("max_tokens"), _stops(body.get("stop_sequences"))
        )
        n_in, n_out = usage(prompt + str(body.get("system", "")), text)
        stop_reason = "max_tokens" if cut else "end_turn"
        msg_id = f"msg_{uuid.uuid4().hex[:24]}"
        model = body.get("model", answers.model)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        forced = _forced_tool(body)
        if forced is not None:  # a structured task: the answer as the forced tool's input
            if body.get("stream"):
                return _anthropic_error(400, "the simulator streams text answers only")
            content = [_tool_use(forced, text)]
            stop_reason = "tool_use"
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": n_in, "output_tokens": n_out},
                }
            )

        async def events() -> AsyncIterator[str]:
            def event(kind: str, data: dict[str, Any]) -> str:
                return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

            start = {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": n_in, "output_tokens": 1},
            }
            yield event("message_start", {"message": start})
            yield event(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            )
            if fault == "stall":
                await asyncio.sleep(timeout_s)
            for i in range(0, len(text), 8):
                yield event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "text_delta", "text": text[i : i + 8]}},
                )
            yield event("content_block_stop", {"index": 0})
            yield event(
                "message_delta",
                {
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": n_out},
                },
            )
            yield event("message_stop", {})

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        fault = await before("openai", request)
        if fault in ("429", "529", "500"):
            return _openai_error(int(fault))
        if fault == "garbage":
            return Response(_GARBAGE, media_type="application/json")
        prompt = _last_user(body.get("messages", []))
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        text, cut = within(answers.answer(prompt), limit, _stops(body.get("stop")))
        n_in, n_out = usage(prompt, text)
        finish = "length" if cut else "stop"
        logprobs = (
            _sim_logprobs(text, body.get("top_logprobs") or 0) if body.get("logprobs") else None
        )
        envelope = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": body.get("model", answers.model),
        }
        if not body.get("stream"):
            return JSONResponse(
                {
                    **envelope,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": logprobs,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": n_in,
                        "completion_tokens": n_out,
                        "total_tokens": n_in + n_out,
                    },
                }
            )

        async def chunks() -> AsyncIterator[str]:
            def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
                data = {
                    **envelope,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return f"data: {json.dumps(data)}\n\n"

            yield chunk({"role": "assistant", "content": ""})
            if fault == "stall":
                await asyncio.sleep(timeout_s)
            yield chunk({"content": text})
            yield chunk({}, finish)
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


async def start_simulator(
    known: Sequence[Example],
    *,
    accuracy: float,
    answer_set: tuple[str, ...] | None,
    judge: JudgeFunction | None = None,
) -> RunningSimulator:
    """The simulator on a free local port, in its own thread and event loop like a separate
    server (``open_teacher``'s ``StartSimulator``); uvicorn leaves signals alone off the main
    thread, so the gateway keeps its own handling of SIGTERM."""
    answers = SimulatedAnswers.from_examples(known, accuracy=accuracy)
    answers.judge = judge
    if answer_set:
        answers.answer_set = tuple(answer_set)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_sim_app(answers), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="teacher-simulator", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the teacher simulator did not start")
        await asyncio.sleep(0.02)

    async def stop() -> None:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)

    return RunningSimulator(f"http://127.0.0.1:{port}", stop)
