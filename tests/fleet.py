"""Several real gateway processes behind one Redis (or one Redis Cluster), driven at once:
the fleet tests' shared set-up and load."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from gateway.keys import key_digest
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import (
    LABELS,
    Served,
    free_port,
    serve_in_thread,
    serve_process,
    write_task,
    write_teacher_task,
)

__all__ = ["Fleet", "Outcomes", "drive", "metric", "wait_until"]


def wait_until(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def metric(url: str, series: str, **labels: str) -> float:
    """Sum of a Prometheus sample on one gateway over the label sets that hold ``labels``."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == series and all(
            f'{k}="{v}"' in sample for k, v in labels.items()
        ):
            total += float(value)
    return total


@dataclass
class Fleet:
    """``n`` gateways on one task with a simulated teacher, client keys limited per minute."""

    tmp_path: Path
    redis: Any  # RedisServer or RedisClusterServers: anything with a .url
    keys: dict[str, int | None]  # key -> requests per minute (None: no limit)
    n: int = 3
    env: dict[str, str] = field(default_factory=dict)
    key_lines: dict[str, str] = field(default_factory=dict)  # key -> more of its entry
    teacher_lines: str = ""  # more of the task's [teacher] section
    strict_lines: str | None = None  # a second task, "strict": its [teacher] section's extra
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    sim: Served | None = None

    def start(self, student: Path) -> Fleet:
        self.sim = serve_in_thread(create_sim_app(SimulatedAnswers({}, LABELS)))
        write_teacher_task(self.tmp_path, student, self.sim.url, self.teacher_lines)
        if self.strict_lines is not None:
            teacher = f'[teacher]\nbase_url = "{self.sim.url}"\napi_key_env = "TEST_TEACHER_KEY"\n'
            calibrator = f'calibrator = "{self.tmp_path / "c.json"}"\n'
            extra = calibrator + teacher + self.strict_lines
            write_task(self.tmp_path / "tasks", student, "strict", extra=extra)
        keys = self.tmp_path / "keys.toml"
        keys.write_text(
            "".join(
                f'[[keys]]\nname = "{k}"\nsha256 = "{key_digest(k).hex()}"\n'
                + (f"requests_per_minute = {rpm}\n" if rpm is not None else "")
                + self.key_lines.get(k, "")
                for k, rpm in self.keys.items()
            )
        )
        for i in range(self.n):
            port = free_port()
            env = {
                "DISTILLGATE_API_KEYS_FILE": str(keys),
                "DISTILLGATE_RATE_LIMIT_REPLICAS": str(self.n),
                "DISTILLGATE_SPOOL_DIR": str(self.tmp_path / f"spool{i}"),
                **self.env,
            }
            log = self.tmp_path / f"gateway{i}.log"
            self.procs.append(serve_process(self.tmp_path, self.redis, port, env=env, log=log))
            self.urls.append(f"http://127.0.0.1:{port}")
        return self

    def sum(self, series: str, **labels: str) -> float:
        return sum(metric(url, series, **labels) for url in self.urls)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)
        if self.sim is not None:
            self.sim.stop()


@dataclass
class Outcomes:
    answered: list[str] = field(default_factory=list)  # request ids, escalated to the teacher
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "429 rate_limit_exceeded"
    routes: Counter[str] = field(default_factory=Counter)  # answered: route, spent budget
    errors: set[str] = field(default_factory=set)  # the error messages seen
    seconds: float = 0.0


def drive(
    urls: list[str],
    key: str,
    total: int,
    *,
    clients: int = 8,
    during: Any = None,
    at: int = 0,
    model: str = "banking77",
) -> Outcomes:
    """``total`` teacher-routed requests with ``key``, spread round-robin over ``urls`` from
    ``clients`` threads at once; ``during()`` runs once ``at`` requests have finished."""
    out = Outcomes()
    lock = threading.Lock()
    sent = iter(range(total))
    done = threading.Event()

    def client(worker: int) -> None:
        sdks = [openai.OpenAI(base_url=f"{u}/v1", api_key=key, max_retries=0) for u in urls]
        while True:
            with lock:
                i = next(sent, None)
            if i is None:
                return
            try:
                raw = sdks[i % len(sdks)].chat.completions.with_raw_response.create(
                    model=model,
                    messages=[{"role": "user", "content": f"{key} {worker} request {i}"}],
                    extra_headers={"x-distillgate-force-route": "teacher"},
                )
                outcome, rid = "200", str(raw.headers["x-request-id"])
                spent = raw.headers.get("x-distillgate-budget-spent")
                route = raw.headers["x-distillgate-route"] + (f" ({spent})" if spent else "")
            except openai.APIStatusError as exc:
                outcome, rid, route = f"{exc.status_code} {exc.code}", "", ""
                with lock:
                    out.errors.add(exc.message)
            with lock:
                out.statuses[outcome] += 1
                if rid:
                    out.answered.append(rid)
                    out.routes[route] += 1
                if sum(out.statuses.values()) == at:
                    done.set()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    if during is not None:
        done.wait(timeout=120)
        during()
    for t in threads:
        t.join()
    out.seconds = time.monotonic() - started
    return out
