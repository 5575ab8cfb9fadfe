"""Steady traffic on gateways from background threads, recording which version answered
each request and any failure: the tests of swaps and trials under load."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import httpx

__all__ = ["Traffic"]


class Traffic:
    def __init__(self, urls: Sequence[str], prompts: Sequence[str], *, per_url: int = 2) -> None:
        self.prompts = list(prompts)
        self.failures: list[str] = []
        self.seen: dict[str, list[str]] = {url: [] for url in urls}  # versions, in order
        # (when the request was sent, the version that answered it), in order of answers.
        self.sent: dict[str, list[tuple[float, str]]] = {url: [] for url in urls}
        # Each thread's own sequence (its requests one after another), by gateway.
        self.sequences: dict[str, list[list[str]]] = {url: [] for url in urls}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._load, args=(url,)) for url in urls for _ in range(per_url)
        ]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def wait_for_answers(self, n: int = 5, timeout_s: float = 60.0) -> None:
        """Until every gateway has answered ``n`` requests (a loaded machine starts slowly)."""
        deadline = time.monotonic() + timeout_s
        while any(len(seen) < n for seen in self.seen.values()):
            assert time.monotonic() < deadline and not self.failures, self.failures[:3]
            time.sleep(0.1)

    def answered_since(self, url: str, since: float) -> list[str]:
        """Versions that answered requests sent after ``since`` (``time.monotonic()``): a
        request in flight across a swap was rightly answered by what served when it came."""
        return [version for sent_at, version in list(self.sent[url]) if sent_at >= since]

    def _load(self, url: str) -> None:
        mine: list[str] = []
        self.sequences[url].append(mine)
        with httpx.Client(base_url=url, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                body = {
                    "model": "banking77",
                    "messages": [{"role": "user", "content": self.prompts[i % len(self.prompts)]}],
                }
                sent_at = time.monotonic()
                r = client.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    self.failures.append(f"{url}: {r.status_code} {r.text[:200]}")
                else:
                    self.seen[url].append(r.headers["x-distillgate-student"])
                    mine.append(r.headers["x-distillgate-student"])
                    self.sent[url].append((sent_at, r.headers["x-distillgate-student"]))
                i += 1
