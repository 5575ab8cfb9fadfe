from __future__ import annotations

from pathlib import Path

from gateway.capture import Spool
from tests.gateway.capture.records import record


def drain(spool: Spool, batch: int = 3) -> list[str]:
    seen: list[str] = []
    while spool.pending:
        records, consumed = spool.peek(batch)
        seen += [r.request_id for r in records]
        spool.commit(consumed)
    return seen


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1500)
    for start in range(0, 30, 5):
        assert spool.append([record(i) for i in range(start, start + 5)]) == 5
    assert len(list(tmp_path.glob("*.jsonl"))) > 2
    assert drain(spool) == [f"req-{i}" for i in range(30)]
    assert not spool.pending and spool.size_bytes == 0
    assert not list(tmp_path.glob("*.jsonl"))  # replayed segments are deleted


def test_a_restarted_spool_finds_what_was_left(tmp_path: Path) -> None:
    Spool(tmp_path).append([record(i) for i in range(4)])
    again = Spool(tmp_path)
    assert again.pending
    assert drain(again) == [f"req-{i}" for i in range(4)]


def test_the_cap_refuses_what_does_not_fit(tmp_path: Path) -> None:
    one = len(record(0).to_json()) + 1
    spool = Spool(tmp_path, max_bytes=3 * one + 10)
    assert spool.append([record(i) for i in range(5)]) == 3
    assert spool.append([record(9)]) == 0
    assert spool.size_bytes <= spool.max_bytes
    assert drain(spool) == ["req-0", "req-1", "req-2"]


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([record(1), record(2)])
    segment = next(tmp_path.glob("*.jsonl"))
    with segment.open("ab") as f:
        f.write(b'{"record_id": "torn"\n')
    again = Spool(tmp_path)
    assert drain(again) == ["req-1", "req-2"]


def test_a_line_torn_without_its_newline_neither_blocks_nor_corrupts(tmp_path: Path) -> None:
    Spool(tmp_path).append([record(1)])
    segment = next(tmp_path.glob("*.jsonl"))
    with segment.open("ab") as f:
        f.write(b'{"record_id": "torn')  # a crash in the middle of a write
    again = Spool(tmp_path)
    again.append([record(2), record(3)])  # the next process appends after the torn line
    assert drain(again) == ["req-1", "req-2", "req-3"]
    assert not again.pending and not list(tmp_path.glob("*.jsonl"))
