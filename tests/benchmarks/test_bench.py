"""The benchmark harness runs end to end (one short round): a broken harness is caught in
CI, not on the day someone needs its figures. The figures themselves are in
docs/benchmarks.md, from full runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.overhead import parse_wrk

ROOT = Path(__file__).resolve().parents[2]

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:9010/v1/chat/completions
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    13.52ms   20.11ms 180.01ms   95.12%
  Latency Distribution
     50%   10.20ms
     75%   12.00ms
     90%   15.50ms
     99%  134.10ms
  5311 requests in 5.01s, 3.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   1060.21
Transfer/sec:    633.38KB
"""


def test_wrk_output_is_read_with_units_and_errors() -> None:
    figures = parse_wrk(WRK_OUTPUT)
    assert figures["requests"] == 5311 and figures["rps"] == pytest.approx(1060.21)
    assert figures["p50_ms"] == pytest.approx(10.2) and figures["p99_ms"] == pytest.approx(134.1)
    assert figures["errors"] == 7
    assert parse_wrk(WRK_OUTPUT.replace("10.20ms", "870.00us"))["p50_ms"] == pytest.approx(0.87)


def test_one_short_overhead_round_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.overhead",
            "--rounds", "1", "--duration", "1", "--connections", "1", "4",
            "--targets", "distillgate", "fastapi-aiohttp", "--litellm", "",
            "--out", str(tmp_path), "--chart", str(tmp_path / "chart.png"),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "overhead.json").read_text())["summary"]
    assert {(r["target"], r["connections"]) for r in summary} == {
        (t, c) for t in ("direct", "distillgate", "fastapi-aiohttp") for c in (1, 4)
    }
    assert all(r["errors"] == 0 and r["rps"] > 0 for r in summary)
    gateway = [r for r in summary if r["target"] == "distillgate"]
    assert all(r["cpu_ms_per_request"] > 0 and r["added_p50_ms"] > 0 for r in gateway)
    assert (tmp_path / "chart.png").stat().st_size > 10_000
    assert "distillgate / fastapi-aiohttp @ 1" in done.stdout
