"""Locust scenarios for a distillgate task: the traffic mix a production gateway sees.

- ``InDomainUser``: the task's own test prompts (what the student was trained for), with a
  mix of ``max_tokens``.
- ``StreamingUser``: the same prompts streamed; reports time to first token.
- ``OffTaskUser``: off-task questions and scrambled text, which should escalate.

Besides each HTTP call, every answer is reported under request type ``route`` (named by
the ``x-distillgate-route`` header) and ``confidence`` (a 0.1-wide bucket of
``x-distillgate-confidence``), with the call's latency: the report's table then shows the
route split and latency per route. Settings by environment: ``DISTILLGATE_TASK``
(default banking77), ``DISTILLGATE_LOAD_DATA`` (JSONL of prompts; default the Banking77
test split), ``DISTILLGATE_API_KEY``.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, task

ROOT = Path(__file__).resolve().parents[1]
TASK = os.environ.get("DISTILLGATE_TASK", "banking77")
DATA = Path(os.environ.get("DISTILLGATE_LOAD_DATA", ROOT / "data/banking77/test.jsonl"))
KEY = os.environ.get("DISTILLGATE_API_KEY", "load-test")
PROMPTS = [json.loads(line)["prompt"] for line in DATA.read_text().splitlines() if line.strip()]
OFF_TASK = [
    "What is the capital of Australia?",
    "Write a haiku about the sea.",
    "Translate 'good morning' into Portuguese.",
    "Who won the football world cup in 2010?",
]
HEADERS = {"authorization": f"Bearer {KEY}"}


def scrambled(rng: random.Random) -> str:
    words = rng.choice(PROMPTS).split()
    rng.shuffle(words)
    return " ".join(words) + " " + "".join(rng.choices("qxzjv", k=6))


def report(user: FastHttpUser, response: Any, started: float) -> None:
    """The answer's route and confidence bucket as extra rows in locust's statistics."""
    route = response.headers.get("x-distillgate-route")
    confidence = response.headers.get("x-distillgate-confidence")
    if route is None:
        return
    elapsed_ms = (time.perf_counter() - started) * 1000
    fire = user.environment.events.request.fire
    fire(request_type="route", name=route, response_time=elapsed_ms, response_length=0)
    if confidence is not None:
        low = min(int(float(confidence) * 10), 9) / 10
        fire(
            request_type="confidence",
            name=f"{low:.1f}-{low + 0.1:.1f}",
            response_time=elapsed_ms,
            response_length=0,
        )


class _Chat(FastHttpUser):
    abstract = True
    wait_time = between(0.05, 0.3)

    def ask(self, content: str, *, name: str, **extra: Any) -> None:
        body = {"model": TASK, "messages": [{"role": "user", "content": content}], **extra}
        started = time.perf_counter()
        with self.client.post(
            "/v1/chat/completions", json=body, headers=HEADERS, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            try:
                text = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError) as exc:
                response.failure(f"not an OpenAI completion: {exc}")
                return
            if not text:
                response.failure("empty answer")
                return
            report(self, response, started)


class InDomainUser(_Chat):
    weight = 6

    @task
    def in_domain(self) -> None:
        max_tokens = random.choice([None, 8, 16, 24])
        extra = {} if max_tokens is None else {"max_tokens": max_tokens}
        self.ask(random.choice(PROMPTS), name="chat in-domain", **extra)


class OffTaskUser(_Chat):
    weight = 2

    @task(1)
    def off_task(self) -> None:
        self.ask(random.choice(OFF_TASK), name="chat off-task")

    @task(2)
    def gibberish(self) -> None:
        self.ask(scrambled(random.Random()), name="chat gibberish")


class StreamingUser(FastHttpUser):
    weight = 2
    wait_time = between(0.05, 0.3)

    @task
    def stream(self) -> None:
        body = {
            "model": TASK,
            "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
            "stream": True,
        }
        started = time.perf_counter()
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            headers=HEADERS,
            name="chat stream",
            stream=True,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            first: float | None = None
            received = ""
            for chunk in response.iter_content(chunk_size=4096, decode_content=True):
                if first is None:
                    first = time.perf_counter()
                received += chunk if isinstance(chunk, str) else chunk.decode()
            done = "data: [DONE]" in received
            if not done:
                response.failure("the stream ended without [DONE]")
                return
            if first is not None:
                self.environment.events.request.fire(
                    request_type="stream",
                    name="time to first token",
                    response_time=(first - started) * 1000,
                    response_length=0,
                )
            report(self, response, started)
