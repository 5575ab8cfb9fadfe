"""The soak's per-minute report: stragglers past the end fold into the last minute."""

from __future__ import annotations

from loadtests.soak import Sample, minute_rows


def test_minutes_count_errors_routes_and_fold_stragglers() -> None:
    t0 = 1000.0
    samples = [Sample(t0 + i, 10.0 + i, 200, "student") for i in range(0, 120)]
    samples += [Sample(t0 + 30, 5000.0, 503, "none"), Sample(t0 + 120.01, 12.0, 200, "teacher")]
    rows = minute_rows(samples, t0, 2.0, {0: 400.0, 1: 401.0})
    assert [r["minute"] for r in rows] == [1, 2]
    assert rows[0]["errors"] == {"503": 1} and rows[0]["requests"] == 61
    assert rows[1]["routes"] == {"student": 60, "teacher": 1} and rows[1]["rss_mb"] == 401.0
    assert rows[0]["p99_ms"] < 5000  # latency of answered requests only
