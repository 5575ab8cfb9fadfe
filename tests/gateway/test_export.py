"""``distillgate export`` against a real redis-server: gates, formats, consumer groups."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.capture import CaptureRecord
from gateway.capture.redis import RedisCaptureSink, default_stream_name
from gateway.cli import main
from gateway.jobs.export import export, is_held_out, normalise_prompt
from gateway.tasks import load_task
from tests.conftest import write_task
from tests.gateway.capture.records import record
from tests.redis_server import RedisServer

STREAM = default_stream_name("banking77")


def put(server: RedisServer, records: list[CaptureRecord]) -> None:
    async def run() -> None:
        sink = RedisCaptureSink.from_url(server.url)
        await sink.write(records)
        await sink.aclose()

    asyncio.run(run())


def ask(i: int, text: str, answer: str | None = "card_arrival", **kw: object) -> CaptureRecord:
    return record(i, messages=({"role": "user", "content": text},), teacher_answer=answer, **kw)


@pytest.fixture
def task_file(tmp_path: Path, tiny_student) -> Path:  # type: ignore[no-untyped-def]
    return write_task(
        tmp_path / "tasks", tiny_student.path, extra="[capture]\nholdout_share = 0.0\n"
    )


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_applies_the_gates_and_writes_both_formats(
    redis_server: RedisServer, task_file: Path, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    put(
        redis_server,
        [
            ask(1, "Where is my card?"),
            ask(2, "  where is MY card? "),  # the same prompt, normalised
            ask(3, "rate for euros", "exchange_rate", route="audit", reason="audit"),
            ask(4, "teacher failed", None, route="student-fallback", teacher_error="timeout"),
            ask(5, "empty answer", "  "),
            ask(6, "made-up label", "not_a_label"),
            ask(7, "cut by a client", "card_arrival", teacher_finish_reason="length"),
        ],
    )
    monkeypatch.setenv("DISTILLGATE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("DISTILLGATE_TASKS_DIR", str(task_file.parent))
    out = tmp_path / "out" / "captured.jsonl"
    main(["export", "--task", "banking77", "--out", str(out)])
    report = capsys.readouterr().out
    assert "read 7 captured records; kept 2 for training" in report
    for reason in (
        "duplicate prompt",
        "teacher error",
        "no teacher answer",
        "outside the answer set",
        "teacher answer cut at max_tokens",
    ):
        assert f"dropped 1: {reason}" in report
    assert read(out) == [
        {"prompt": "Where is my card?", "answer": "card_arrival"},
        {"prompt": "rate for euros", "answer": "exchange_rate"},
    ]
    assert read(out.with_suffix(".chat.jsonl"))[0] == {
        "messages": [
            {"role": "user", "content": "Where is my card?"},
            {"role": "assistant", "content": "card_arrival"},
        ]
    }


def test_export_resumes_where_the_group_left_off(
    redis_server: RedisServer, task_file: Path, tmp_path: Path
) -> None:
    task, client = load_task(task_file), redis_server.client()
    out, chat = tmp_path / "a.jsonl", tmp_path / "a.chat.jsonl"
    put(redis_server, [ask(i, f"prompt {i}") for i in range(5)])
    assert export(client, task, out, chat, consumer="one").kept == 5
    assert export(client, task, out, chat, consumer="one").read == 0  # nothing new
    put(redis_server, [ask(i, f"prompt {i}") for i in range(5, 8)])
    assert export(client, task, out, chat, consumer="two").kept == 3
    assert [r["prompt"] for r in read(out)] == [f"prompt {i}" for i in range(8)]
    assert client.xpending(STREAM, "distillgate-export")["pending"] == 0


def test_a_crashed_consumers_entries_are_redelivered_and_not_duplicated(
    redis_server: RedisServer, task_file: Path, tmp_path: Path
) -> None:
    task, client = load_task(task_file), redis_server.client()
    out, chat = tmp_path / "b.jsonl", tmp_path / "b.chat.jsonl"
    put(redis_server, [ask(i, f"prompt {i}") for i in range(6)])
    client.xgroup_create(STREAM, "distillgate-export", id="0")
    # a consumer that read three entries and died before acknowledging them
    client.xreadgroup("distillgate-export", "crashed", {STREAM: ">"}, count=3)
    stats = export(client, task, out, chat, consumer="survivor", claim_idle_ms=0)
    assert stats.kept == 6
    # the crashed consumer comes back and reads its pending entries again: nothing doubles
    client.xreadgroup("distillgate-export", "crashed", {STREAM: "0"})
    assert export(client, task, out, chat, consumer="crashed").kept == 0
    assert len(read(out)) == 6


def test_holdout_is_a_stable_share_of_prompts() -> None:
    keys = [normalise_prompt(f"prompt number {i}") for i in range(4000)]
    share = sum(is_held_out(k, 0.2) for k in keys) / len(keys)
    assert 0.18 < share < 0.22
    assert [is_held_out(k, 0.2) for k in keys] == [is_held_out(k, 0.2) for k in keys]
    assert not any(is_held_out(k, 0.0) for k in keys)
