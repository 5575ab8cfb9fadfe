"""A student served elsewhere: any OpenAI-compatible server that returns logprobs.

For a student that outgrows one GPU: a ``vllm serve`` fleet behind a router (llm-d,
KServe, vLLM's router) or another distillgate. The gateway keeps everything else
(calibration, routing, capture); the fleet only generates. Chat requests go to the
fleet's ``/chat/completions`` (its chat template applies), raw prompts to
``/completions``.

Confidence: servers report each token's top-k logprobs (k <= 20 on vLLM by default),
not the full distribution, so the calibrated per-token probability is the chosen
logprob renormalised over the top k at the calibrator's T (``renormalized_logprob``).
vLLM reports raw logprobs, from the model before any sampling temperature, which is what
the calibrator was fitted on. A server that reports processed logprobs (after its own
temperature) would bias the confidence; the conformance suite checks greedy logprobs.

Aborts: closing the generator, or cancelling the task consuming it, closes the HTTP
exchange, which vLLM takes as an abort.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from calibration import renormalized_logprob
from gateway.engines.base import (
    FinishReason,
    GenerationRequest,
    ScoredText,
    TokenDelta,
    TokenLogprob,
)
from gateway.engines.http import ClientOptions, UpstreamClient, open_client
from gateway.errors import EngineError, EngineUnavailable, InvalidRequest, Overloaded

__all__ = ["RemoteEngine"]

_Json = dict[str, Any]


class RemoteEngine:
    """``StudentEngine`` over an OpenAI-compatible server.

    Parameters
    ----------
    base_url : the server's API root, up to and including ``/v1``.
    model : the served model name sent in each request.
    api_key : bearer key, if the fleet wants one.
    client : "aiohttp" or "httpx" (see ``engines/http.py``).
    stream : read tokens as the server streams them instead of one whole response.
    confidence_top_k : alternatives asked for per token when a confidence is wanted.
    health_path : probed by ``check_health``, relative to the server root.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        client: Literal["aiohttp", "httpx"] = "aiohttp",
        stream: bool = False,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 256,
        confidence_top_k: int = 20,
        health_path: str = "/health",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.stream = stream
        self.confidence_top_k = confidence_top_k
        parts = urlsplit(self.base_url)
        self.health_url = f"{parts.scheme}://{parts.netloc}/{health_path.lstrip('/')}"
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._client_kind = client
        self._options = ClientOptions(headers, timeout_s, connect_timeout_s, max_connections)
        self._client: UpstreamClient | None = None
        self._running: dict[str, asyncio.Task[Any]] = {}

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._client is None:  # inside the running loop: aiohttp binds to it
            self._client = open_client(self._client_kind, self._options)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def check_health(self) -> None:
        status = await self._open().get_status(self.health_url)
        if status != 200:
            raise EngineUnavailable(f"The student server is not healthy (HTTP {status}).")

    async def abort(self, request_id: str) -> None:
        task = self._running.get(request_id)
        if task is not None:
            task.cancel()

    def _open(self) -> UpstreamClient:
        if self._client is None:
            raise EngineError("the remote student engine is not started")
        return self._client

    # -- requests ----------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        client = self._open()
        chat = request.prompt is None
        url = f"{self.base_url}/chat/completions" if chat else f"{self.base_url}/completions"
        body = orjson.dumps(self._body(request))
        shape = _Shape(request)
        task = asyncio.current_task()
        if task is not None:
            self._running[request.request_id] = task
        try:
            if not self.stream:
                status, raw = await client.post(url, body)
                if status != 200:
                    raise _status_error(status, raw)
                for delta in shape.whole(_parse(raw), chat):
                    yield delta
                return
            async with client.stream(url, body) as response:
                if response.status != 200:
                    raise _status_error(
                        response.status, b"".join([b async for b in response.lines])
                    )
                async for delta in shape.streamed(_events(response.lines), chat):
                    yield delta
        finally:
            self._running.pop(request.request_id, None)

    async def score(
        self, request: GenerationRequest, text: str, *, logprobs: bool
    ) -> ScoredText | None:
        """None: the fleet's tokenizer is not here, and OpenAI's API has no call that
        splits or scores a given text (the serving layer says what it does instead)."""
        return None

    def _body(self, request: GenerationRequest) -> _Json:
        s = request.sampling
        k = s.top_logprobs
        if request.confidence_temperature is not None:
            k = max(k, self.confidence_top_k)
        body: _Json = {
            "model": self.model,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if request.prompt is None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            body["logprobs"] = True
            body["top_logprobs"] = k
        else:
            body["prompt"] = request.prompt
            body["logprobs"] = k
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if s.json_schema is not None:  # vLLM's own structured outputs, on both endpoints
            body["structured_outputs"] = {"json": json.loads(s.json_schema)}
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body


# token, its logprob, the alternatives' logprobs, the reported (token, logprob) pairs, bytes
_Token = tuple[str, float, list[float], list[tuple[str, float]], bytes | None]


class _Shape:
    """Turns the server's choices into ``TokenDelta``s for one request.

    On the hot path: a top-20 answer is ~80 alternatives per request, so only their
    logprobs are read for the confidence, and names only for those the client asked for.
    """

    def __init__(self, request: GenerationRequest) -> None:
        self.report = request.sampling.top_logprobs
        self.temperature = request.confidence_temperature

    def delta(
        self,
        token: _Token,
        text: str = "",
        finish: FinishReason | None = None,
        prompt_tokens: int = 0,
    ) -> TokenDelta:
        name, logprob, top, reported, _ = token
        scaled = None
        if self.temperature is not None:
            scaled = renormalized_logprob(logprob, top, self.temperature)
        return TokenDelta(
            token_id=-1,  # OpenAI's wire format names tokens by text only
            text=text,
            token=name,
            logprob=logprob,
            top_logprobs=tuple(TokenLogprob(-1, t, lp) for t, lp in reported) if reported else (),
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            scaled_logprob=scaled,
        )

    def tokens(self, choice: _Json, chat: bool) -> list[_Token]:
        logprobs = choice.get("logprobs") or {}
        k = self.report
        out: list[_Token] = []
        if chat:
            for e in logprobs.get("content") or ():
                top = e.get("top_logprobs") or ()
                raw = e.get("bytes")
                out.append(
                    (
                        e["token"],
                        float(e["logprob"]),
                        [t["logprob"] for t in top],
                        [(t["token"], t["logprob"]) for t in top[:k]] if k else [],
                        bytes(raw) if raw is not None else None,
                    )
                )
            return out
        tops = logprobs.get("top_logprobs") or ()
        names = logprobs.get("tokens") or ()
        values = logprobs.get("token_logprobs") or ()
        for i, (name, lp) in enumerate(zip(names, values, strict=False)):
            alternatives = (tops[i] if i < len(tops) else None) or {}
            pairs = list(alternatives.items())
            out.append((name, float(lp), [v for _, v in pairs], pairs[:k], None))
        return out

    def whole(self, data: _Json, chat: bool) -> list[TokenDelta]:
        try:
            choice = data["choices"][0]
            text = (choice["message"]["content"] if chat else choice["text"]) or ""
            tokens = self.tokens(choice, chat)
            finish = _finish(choice.get("finish_reason"))
            prompt_tokens = int((data.get("usage") or {}).get("prompt_tokens", 0))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise EngineError("The student server sent a malformed completion.") from None
        if not tokens:
            raise EngineError("The student server returned no logprobs; it must support them.")
        last = len(tokens) - 1
        deltas = [
            self.delta(token, piece, finish if i == last else None, prompt_tokens)
            for i, (token, piece) in enumerate(zip(tokens, _texts(text, tokens), strict=True))
        ]
        deltas[-1] = _mark_end(deltas[-1])
        return deltas

    async def streamed(
        self, events: AsyncIterator[_Json], chat: bool
    ) -> AsyncGenerator[TokenDelta, None]:
        """Each token is held until the next arrives: the last one gets the finish reason
        and the prompt size, which come in later chunks."""
        held: TokenDelta | None = None
        finish: FinishReason | None = None
        prompt_tokens = 0
        try:
            async for chunk in events:
                usage = chunk.get("usage")
                if usage:
                    prompt_tokens = int(usage.get("prompt_tokens", 0))
                for choice in chunk.get("choices") or ():
                    text = choice.get("delta", {}).get("content") if chat else choice.get("text")
                    tokens = [self.delta(t) for t in self.tokens(choice, chat)]
                    if tokens:
                        if held is not None:
                            yield held
                        *ready, held = tokens
                        for d in ready:
                            yield d
                    if text:
                        if held is None:
                            raise EngineError("The student server streamed text without logprobs.")
                        held = dataclasses.replace(held, text=held.text + text)
                    if choice.get("finish_reason") is not None:
                        finish = _finish(choice["finish_reason"])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise EngineError("The student server sent a malformed stream.") from None
        if held is None or finish is None:
            raise EngineError("The student server's stream ended before the answer did.")
        yield _mark_end(
            dataclasses.replace(held, finish_reason=finish, prompt_tokens=prompt_tokens)
        )


def _mark_end(last: TokenDelta) -> TokenDelta:
    """A last token that ended the answer and carries none of its text is the end token."""
    if last.finish_reason == "stop" and not last.text:
        return dataclasses.replace(last, end=True)
    return last


def _texts(text: str, tokens: list[_Token]) -> list[str]:
    """Each token's share of ``text``: its bytes decoded (incrementally from the first token
    that splits a character), kept where they continue the text; tokens outside it (the end
    token, a stop string the server cut) get none, and any remainder goes to the last."""
    decoder: codecs.IncrementalDecoder | None = None
    pieces, pos = [], 0
    for name, _, _, _, raw in tokens:
        if raw is None:
            piece = name
        elif decoder is not None:
            piece = decoder.decode(raw)
        else:
            try:
                piece = raw.decode()
            except UnicodeDecodeError:  # a character spans tokens: decode across them
                decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                piece = decoder.decode(raw)
        if piece and text.startswith(piece, pos):
            pieces.append(piece)
            pos += len(piece)
        else:
            pieces.append("")
    if pos < len(text):
        pieces[-1] += text[pos:]
    return pieces


def _finish(reason: object) -> FinishReason:
    if reason == "length":
        return "length"
    if reason == "stop":
        return "stop"
    raise EngineError(f"The student server ended the answer with {reason!r}.")


def _parse(raw: bytes) -> _Json:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise EngineError("The student server sent a malformed completion.") from None
    if not isinstance(data, dict):
        raise EngineError("The student server sent a malformed completion.")
    return data


async def _events(lines: AsyncIterator[bytes]) -> AsyncIterator[_Json]:
    async for line in lines:
        if not line.startswith(b"data:"):
            continue  # blank separators, comments, event names
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return
        yield _parse(payload)


def _status_error(status: int, raw: bytes) -> Exception:
    message = ""
    try:
        error = orjson.loads(raw).get("error") or {}
        message = str(error.get("message") or "") if isinstance(error, dict) else str(error)
    except (orjson.JSONDecodeError, AttributeError):
        pass
    if status in (400, 422):
        return InvalidRequest(message or "The student server refused the request.")
    if status == 429:
        return Overloaded("The student server is overloaded; retry shortly.")
    if status == 503:
        return EngineUnavailable("The student server is unavailable.")
    return EngineError(f"The student server answered HTTP {status}.")
