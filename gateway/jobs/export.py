"""``distillgate export``: captured pairs → training files, through a Redis consumer group.

Reading: ``XREADGROUP`` as one consumer of a group (default ``distillgate-export``), so
several exporters on several machines share the stream without overlap, and a run picks
up where the group left off. Entries are acknowledged (``XACK``) only after the lines
they produced are fsync'd: at-least-once. A crashed run's unacknowledged entries come
back to the same consumer name on its next run, or to any consumer (``XAUTOCLAIM``) once
idle for ``claim_idle_ms``. Output files are appended to, and the prompts already in them
are not written again, so a redelivered entry never duplicates a line.

Quality gates, in order (first failing one names the drop): a readable schema; no teacher
error; a non-empty teacher answer, not cut at a client's ``max_tokens``; inside the task's
answer set when it has one; and one example per normalised prompt. Prompts in the task's
holdout share (a hash of the normalised prompt) are kept out of training: ``calibrate
--from-stream`` fits on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from gateway.capture import CaptureRecord
from gateway.capture.redis import default_stream_name
from gateway.engines.base import Message
from gateway.examples import Example, read_examples
from gateway.pipeline.prompt import training_turns
from gateway.redis_clients import SyncRedis
from gateway.tasks import Task

__all__ = [
    "ExportStats",
    "drop_reason",
    "export",
    "is_held_out",
    "normalise_prompt",
    "stream_entries",
    "stream_name",
    "stream_records",
    "to_example",
]

Entry = tuple[str, dict[str, str]]


def stream_name(task: Task) -> str:
    return task.capture.stream or default_stream_name(task.name)


def normalise_prompt(text: str) -> str:
    """What makes two prompts "the same" for de-duplication: case, width and spacing aside."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def is_held_out(key: str, share: float) -> bool:
    """A stable pseudo-random draw per prompt: same answer on every machine, every run."""
    draw = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return draw < share


def drop_reason(record: CaptureRecord, task: Task) -> str | None:
    if record.teacher_error:
        return "teacher error"
    if record.teacher_answer is None or not record.teacher_answer.strip():
        return "no teacher answer"
    if record.teacher_finish_reason == "length":
        return "teacher answer cut at max_tokens"
    check = task.answer_check
    if check.labels is not None and record.teacher_answer not in check.labels:
        return "outside the answer set"
    if check.structured and check.parse(record.teacher_answer) is None:
        return "does not fit the answer schema"
    return None


def to_example(record: CaptureRecord, task: Task) -> Example:
    """The teacher's answer as the reference, for the turns the student read (the record
    holds them as the prompt policy made them; the policy's own system prompt comes off,
    as it is added back wherever the example is replayed)."""
    answer = task.answer_check.training_text(record.teacher_answer or "")
    read = [Message(m["role"], m["content"]) for m in record.messages]
    turns = training_turns(task.prompt, read)
    if len(turns) == 1 and turns[0].role == "user":
        return Example(answer=answer, prompt=turns[0].content)
    return Example(
        answer=answer, messages=tuple({"role": m.role, "content": m.content} for m in turns)
    )


def _chat_line(record: CaptureRecord, example: Example) -> dict[str, Any]:
    return {"messages": [*record.messages, {"role": "assistant", "content": example.answer}]}


@dataclass
class ExportStats:
    read: int = 0
    kept: int = 0
    held_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def report(self) -> str:
        lines = [
            f"read {self.read} captured records; kept {self.kept} for training, "
            f"held out {self.held_out} for calibration (calibrate --from-stream)"
        ]
        lines += [f"  dropped {n}: {reason}" for reason, n in self.dropped.most_common()]
        return "\n".join(lines)


def _existing_prompts(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {normalise_prompt(ex.chat()[-1]["content"]) for ex in read_examples(path)}


def _decode(fields: dict[str, str]) -> CaptureRecord | None:
    try:
        return CaptureRecord.from_json(fields["data"])
    except (KeyError, ValueError):
        return None


def stream_records(client: SyncRedis, task: Task, *, count: int = 1000) -> Iterator[CaptureRecord]:
    """Every readable record of the task's stream, oldest first, without consuming it."""
    for _, record in stream_entries(client, task, count=count):
        if record is not None:
            yield record


def stream_entries(
    client: SyncRedis, task: Task, *, after: str = "-", count: int = 1000
) -> Iterator[tuple[str, CaptureRecord | None]]:
    """(entry id, record or None if unreadable) of the task's stream after entry ``after``
    (exclusive; ``-``: from the start), oldest first, without consuming them."""
    start = after
    while True:
        entries: list[Entry] = cast(Any, client.xrange(stream_name(task), start, "+", count=count))
        for entry_id, fields in entries:
            if entry_id == start:
                continue
            yield entry_id, _decode(fields)
        if len(entries) < count:
            return
        start = entries[-1][0]


def export(
    client: SyncRedis,
    task: Task,
    out: Path,
    chat_out: Path,
    *,
    group: str = "distillgate-export",
    consumer: str | None = None,
    batch: int = 500,
    claim_idle_ms: int = 600_000,
) -> ExportStats:
    """Consume the task's stream into ``out`` ({"prompt","answer"}) and ``chat_out``."""
    stream = stream_name(task)
    consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    seen = _existing_prompts(out)
    stats = ExportStats()
    out.parent.mkdir(parents=True, exist_ok=True)
    chat_out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f_out, chat_out.open("a", encoding="utf-8") as f_chat:
        for entries in _deliveries(client, stream, group, consumer, batch, claim_idle_ms):
            for _, fields in entries:
                stats.read += 1
                record = _decode(fields)
                if record is None:
                    stats.dropped["unreadable or unknown schema"] += 1
                    continue
                reason = drop_reason(record, task)
                example = to_example(record, task) if reason is None else None
                key = normalise_prompt(example.chat()[-1]["content"]) if example else ""
                if reason is None and key in seen:
                    reason = "duplicate prompt"
                if reason is not None or example is None:
                    stats.dropped[reason or "unknown"] += 1
                    continue
                seen.add(key)
                if is_held_out(key, task.capture.holdout_share):
                    stats.held_out += 1
                    continue
                f_out.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
                f_chat.write(json.dumps(_chat_line(record, example), ensure_ascii=False) + "\n")
                stats.kept += 1
            for f in (f_out, f_chat):
                f.flush()
                os.fsync(f.fileno())
            client.xack(stream, group, *(entry_id for entry_id, _ in entries))
    return stats


def _deliveries(
    client: SyncRedis, stream: str, group: str, consumer: str, batch: int, claim_idle_ms: int
) -> Iterable[list[Entry]]:
    """This consumer's unacknowledged entries, then abandoned ones, then new ones."""
    start = "0"
    while True:  # ours, delivered before a crash
        reply: Any = client.xreadgroup(group, consumer, {stream: start}, count=batch)
        entries: list[Entry] = reply[0][1] if reply else []
        if not entries:
            break
        yield entries
        start = entries[-1][0]
    cursor = "0-0"
    while True:  # other consumers' entries, idle for claim_idle_ms
        claim: Any = client.xautoclaim(
            stream, group, consumer, claim_idle_ms, start_id=cursor, count=batch
        )
        cursor, claimed = claim[0], claim[1]
        claimed = [e for e in claimed if e is not None and e[1] is not None]
        if claimed:
            yield claimed
        if cursor in ("0-0", b"0-0"):
            break
    while True:  # new ones
        reply = client.xreadgroup(group, consumer, {stream: ">"}, count=batch)
        entries = reply[0][1] if reply else []
        if not entries:
            return
        yield entries
