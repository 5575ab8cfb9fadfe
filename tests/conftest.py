"""Shared fixtures: a real tiny student trained once per session, and a real gateway server.

The student is trained by the project's own trainer on four Banking77 intents (one with
capitals, to exercise the tokenizer's round trip) with a small shape, so it takes
seconds and still answers in-domain prompts with real labels.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from calibration import Calibration, save_calibration, student_fingerprint
from gateway.app import create_app
from gateway.examples import Example, read_examples
from gateway.settings import Settings
from gateway.training.model import StudentShape
from gateway.training.trainer import TrainConfig, train_student
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "banking77"
LABELS = ("card_arrival", "exchange_rate", "lost_or_stolen_card", "Refund_not_showing_up")
TINY = TrainConfig(
    shape=StudentShape(
        hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, max_positions=128
    ),
    vocab_size=400,
    batch_size=16,
    lr=3e-3,
    max_steps=250,
    time_budget_s=120,
    eval_every_s=1e9,
    dropout=0.0,
    word_dropout=0.0,
    threads=2,
)


def subset(path: Path, per_label: int) -> list[Example]:
    out: list[Example] = []
    for label in LABELS:
        out += [e for e in read_examples(path) if e.answer == label][:per_label]
    return out


@dataclass(frozen=True)
class TinyStudent:
    path: Path
    train: list[Example]
    test: list[Example]


# A test that uses any of these meets real parts: it belongs to the integration tier, and so
# does every test in these places (real processes, the simulator over real HTTP).
_REAL_PARTS = {"tiny_student", "redis_server", "run_gateway", "gateway", "prometheus"}
_REAL_MODULES = (
    "tests/deploy/",
    "tests/loadtests/",
    "tests/benchmarks/",
    "tests/test_cli.py",
    "tests/gateway/teachers/",
    "tests/gateway/loop/test_round.py",
    "tests/gateway/loop/test_judged_round.py",
    "tests/gateway/training/test_finetune.py",
    "tests/gateway/training/test_placeholder_student.py",
    "tests/gateway/engines/test_vllm_engine.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the integration tier, so the fast one runs alone: ``pytest -m "not integration"``
    (no model, no servers: the pipeline on fakes, the calibration math, the wire models)."""
    for item in items:
        path = item.nodeid.replace("\\", "/")
        fixtures = set(getattr(item, "fixturenames", ()))
        vllm = item.get_closest_marker("vllm") is not None
        if fixtures & _REAL_PARTS or path.startswith(_REAL_MODULES) or vllm:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _no_capture_by_default() -> Iterator[None]:
    """Gateways built from plain ``Settings()`` capture nothing unless a test gives Redis."""
    old = os.environ.get("DISTILLGATE_REDIS_URL")
    os.environ["DISTILLGATE_REDIS_URL"] = ""
    yield
    if old is None:
        os.environ.pop("DISTILLGATE_REDIS_URL", None)
    else:
        os.environ["DISTILLGATE_REDIS_URL"] = old


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh real redis-server per test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> TinyStudent:
    out = tmp_path_factory.mktemp("student")
    train, test = subset(DATA / "train.jsonl", 60), subset(DATA / "test.jsonl", 10)
    train_student(train, test, out, TINY)
    return TinyStudent(out, train, test)


def write_task(tasks_dir: Path, student: Path, name: str = "banking77", extra: str = "") -> Path:
    tasks_dir.mkdir(parents=True, exist_ok=True)
    labels = ", ".join(f'"{label}"' for label in LABELS)
    path = tasks_dir / f"{name}.toml"
    path.write_text(
        f'description = "test task"\nstudent = "{student}"\nanswers = [{labels}]\n{extra}\n'
        f"[generation]\nmax_tokens = 24\n"
    )
    return path


def write_calibrator(path: Path, student: Path, threshold: float = 0.75, **fields: Any) -> Path:
    """A hand-set calibrator (T = 1) for ``student``, matching its fingerprint."""
    save_calibration(
        Calibration(
            temperature=1.0,
            threshold=threshold,
            student_fingerprint=student_fingerprint(student),
            **fields,
        ),
        path,
    )
    return path


def write_teacher_task(
    tmp_path: Path, student: Path, teacher_url: str, teacher_extra: str = ""
) -> Path:
    """Task banking77 in tmp_path/tasks: calibrated (threshold 0.75), with an Anthropic
    teacher at ``teacher_url`` keyed by $TEST_TEACHER_KEY (``teacher_extra``: more of its
    ``[teacher]`` lines)."""
    calibrator = write_calibrator(tmp_path / "c.json", student)
    teacher = f'[teacher]\nbase_url = "{teacher_url}"\napi_key_env = "TEST_TEACHER_KEY"\n'
    teacher += teacher_extra
    return write_task(tmp_path / "tasks", student, extra=f'calibrator = "{calibrator}"\n{teacher}')


def cli(
    *args: str, cwd: Path, tasks: Path | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``distillgate ARGS`` as a user runs it, in ``cwd``; ``tasks``: its tasks folder. No
    Redis unless a test's environment names one."""
    env = {**os.environ, "DISTILLGATE_REDIS_URL": os.environ.get("DISTILLGATE_REDIS_URL", "")}
    if tasks is not None:
        env["DISTILLGATE_TASKS_DIR"] = str(tasks)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    url: str
    settings: Settings

    def client(self, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=kw.pop("api_key", "test"), max_retries=0, **kw
        )  # type: ignore[arg-type]

    def metric(self, name: str) -> float:
        """Sum of a Prometheus sample over all its labels."""
        text = httpx.get(f"{self.url}/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        )


def serve_process(
    tmp_path: Path,
    redis: RedisServer,
    port: int,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``distillgate serve`` as a real process (signals reach it), tasks in tmp_path/tasks;
    ``env`` adds to its environment, ``log`` receives its output."""
    env = {
        **os.environ,
        "DISTILLGATE_TASKS_DIR": str(tmp_path / "tasks"),
        "DISTILLGATE_REDIS_URL": redis.url,
        "DISTILLGATE_SPOOL_DIR": str(tmp_path / "spool"),
        "DISTILLGATE_CAPTURE_TIMEOUT_S": "0.5",
        "DISTILLGATE_ALLOW_FORCE_ROUTE": "true",
        "DISTILLGATE_BUILD_MISSING_STUDENTS": "false",
        "DISTILLGATE_PORT": str(port),
        "TEST_TEACHER_KEY": "k",
        **(env or {}),
    }
    out = log.open("ab") if log is not None else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=out, stderr=out
    )
    if out is not None:
        out.close()  # the child has its own copy
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.1)


@dataclass
class Served:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def serve_in_thread(app: object) -> Served:
    """Run an ASGI app as a real uvicorn server on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return Served(f"http://127.0.0.1:{port}", server, thread)


@pytest.fixture(scope="session")
def run_gateway() -> Iterator[object]:
    """Start gateways as real servers on free ports; all stop at session end."""
    started: list[Served] = []

    def start(settings: Settings) -> Gateway:
        served = serve_in_thread(create_app(settings))
        started.append(served)
        return Gateway(served.url, settings)

    yield start
    for served in started:
        served.stop()


IN_DOMAIN = "I still have not received my card"
# Prompts off the tiny student's four intents, blends of two among them. A student this small
# is sure of most of them, and which one it doubts most depends on the machine's arithmetic,
# so the escalation tests measure rather than guess.
OFF_TOPIC = (
    "zxqv blorf quantum pickle 88 !!",
    "hello",
    "my card was stolen, and what is the exchange rate?",
    "Has my card arrived or was it stolen?",
    "purple monkey dishwasher",
    "lorem ipsum dolor sit amet",
    "the",
    "refund",
    "card exchange",
    "zebra",
    "asdf qwer zxcv",
    "?",
)


@dataclass(frozen=True)
class Unsure:
    """The off-topic prompt the tiny student doubts most, its answer, and a threshold halfway
    between its confidence and the in-domain prompt's: a calibrator (T = 1) at that threshold
    keeps the in-domain answer and escalates this one."""

    prompt: str
    student_answer: str
    confidence: float
    threshold: float

    def teacher_answer(self) -> str:
        """A label the student did not give, so an answer from the teacher is visible."""
        return next(label for label in LABELS if label != self.student_answer)


@pytest.fixture(scope="session")
def unsure(
    tiny_student: TinyStudent, run_gateway, tmp_path_factory: pytest.TempPathFactory
) -> Unsure:  # type: ignore[no-untyped-def]
    tasks = tmp_path_factory.mktemp("unsure")
    calibrator = write_calibrator(tasks / "c.json", tiny_student.path, threshold=0.0)
    write_task(tasks / "tasks", tiny_student.path, extra=f'calibrator = "{calibrator}"\n')
    client = run_gateway(Settings(tasks_dir=tasks / "tasks")).client()
    seen: dict[str, tuple[float, str]] = {}
    for prompt in (IN_DOMAIN, *OFF_TOPIC):
        raw = client.chat.completions.with_raw_response.create(
            model="banking77", messages=[{"role": "user", "content": prompt}]
        )
        answer = raw.parse().choices[0].message.content or ""
        seen[prompt] = (float(raw.headers["x-distillgate-confidence"]), answer)
    sure = seen.pop(IN_DOMAIN)[0]
    prompt, (confidence, answer) = min(seen.items(), key=lambda item: item[1][0])
    assert sure - confidence >= 0.02, f"the tiny student is sure of everything: {seen}"
    return Unsure(prompt, answer, confidence, round((sure + confidence) / 2, 4))


@pytest.fixture(scope="session")
def gateway(
    tiny_student: TinyStudent, run_gateway, tmp_path_factory: pytest.TempPathFactory
) -> Gateway:  # type: ignore[no-untyped-def]
    tasks = tmp_path_factory.mktemp("tasks")
    write_task(tasks, tiny_student.path)
    return run_gateway(Settings(tasks_dir=tasks, max_batch_size=32, max_waiting=64))  # type: ignore[no-any-return]
