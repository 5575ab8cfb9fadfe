"""The cost report's arithmetic on a hand-made ledger: rows per task and key, the totals,
the shares, the daily split, and the period a --since names."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gateway.cli.report import days_since
from gateway.usage import cost_rows, daily_split
from gateway.usage.report import plot_daily, render_table

DAYS = {
    "2026-12-05": {
        ("banking77", "acme", "requests:student"): 6.0,
        ("banking77", "acme", "requests:teacher"): 2.0,
        ("banking77", "acme", "teacher_calls:escalation"): 2.0,
        ("banking77", "acme", "teacher_usd:escalation"): 0.002,
        ("banking77", "acme", "teacher_input_tokens:escalation"): 200.0,
        ("banking77", "acme", "teacher_output_tokens:escalation"): 10.0,
        ("banking77", "acme", "saved_usd"): 0.006,
    },
    "2026-12-06": {
        ("banking77", "acme", "requests:cache"): 1.0,
        ("banking77", "acme", "requests:student-fallback"): 1.0,
        ("banking77", "acme", "saved_usd"): 0.001,
        ("banking77", "globex", "requests:teacher"): 2.0,
        ("banking77", "globex", "teacher_usd:escalation"): 0.003,
        ("banking77", "globex", "teacher_usd:audit"): 0.001,
    },
}


def test_rows_per_task_and_key_add_up_to_the_total() -> None:
    acme, globex, total = cost_rows(DAYS)
    assert (acme.task, acme.key, total.task, total.key) == ("banking77", "acme", "*", "*")
    assert acme.requests == {"student": 6, "student-fallback": 1, "cache": 1, "teacher": 2}
    assert acme.shares()["student"] == pytest.approx(0.6) and acme.total == 10
    assert acme.teacher_usd == pytest.approx(0.002) and acme.saved_usd == pytest.approx(0.007)
    assert (acme.teacher_input_tokens, acme.teacher_output_tokens) == (200, 10)
    assert globex.teacher_usd == pytest.approx(0.004) and globex.background_usd == 0.001
    assert total.total == 12 and total.teacher_usd == pytest.approx(0.006)
    (by_task, everything) = cost_rows(DAYS, by_key=False)
    assert by_task.key == "*" and by_task.total == everything.total == 12


def test_the_daily_split_and_the_table() -> None:
    split = daily_split(DAYS)
    assert split[0] == (
        "2026-12-05",
        {"student": 6, "student-fallback": 0, "cache": 0, "teacher": 2},
    )
    assert split[1][1]["teacher"] == 2 and split[1][1]["cache"] == 1
    table = render_table(cost_rows(DAYS)).splitlines()
    assert table[0].split()[:3] == ["task", "key", "requests"] and len(table) == 4
    assert "60.0%" in table[1] and "0.0070" in table[1]


def test_the_chart_is_written(tmp_path: Path) -> None:
    plot_daily(daily_split(DAYS), tmp_path / "out" / "daily.png", "test")
    assert (tmp_path / "out" / "daily.png").read_bytes()[:4] == b"\x89PNG"


def test_since_names_whole_utc_days() -> None:
    today = dt.date(2026, 12, 6)
    assert days_since("1d", today) == ["2026-12-06"]
    assert days_since("7d", today)[0] == "2026-11-30" and len(days_since("7d", today)) == 7
    assert days_since("2026-12-04", today) == ["2026-12-04", "2026-12-05", "2026-12-06"]
    for bad in ("yesterday", "2026-12-07"):
        with pytest.raises(SystemExit):
            days_since(bad, today)
