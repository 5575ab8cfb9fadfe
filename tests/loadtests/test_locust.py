"""A short headless locust run against a real gateway: zero failures, reports written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.examples import write_examples
from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import LABELS, free_port, serve_in_thread, write_calibrator, write_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_headless_locust_run_has_no_failures_and_writes_its_reports(
    tiny_student, run_gateway, tmp_path: Path, monkeypatch, workers: int
) -> None:  # type: ignore[no-untyped-def]
    """``workers``: 0, one locust process; 2, locust's master and two workers, whose samples
    the master merges into the same summary."""
    monkeypatch.setenv("DISTILLGATE_TEST_LOAD_KEY", "k")
    sim = serve_in_thread(create_sim_app(SimulatedAnswers({}, LABELS)))
    calibrator = write_calibrator(tmp_path / "c.json", tiny_student.path)
    teacher = f'[teacher]\nbase_url = "{sim.url}"\napi_key_env = "DISTILLGATE_TEST_LOAD_KEY"\n'
    write_task(
        tmp_path / "tasks", tiny_student.path, extra=f'calibrator = "{calibrator}"\n' + teacher
    )
    gw = run_gateway(Settings(tasks_dir=tmp_path / "tasks"))
    prompts = tmp_path / "prompts.jsonl"
    write_examples(prompts, tiny_student.test)
    out = tmp_path / "load"
    options = f"--host {gw.url} --users 4 --spawn-rate 4 --duration 8s --out {out}"
    if workers:
        options += f" --workers {workers} --master-port {free_port()}"
    done = subprocess.run(
        [sys.executable, str(ROOT / "loadtests" / "run.py"), *options.split()],
        env={**os.environ, "DISTILLGATE_LOAD_DATA": str(prompts)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    sim.stop()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert ", 0 failures." in summary
    assert "| student |" in summary and "| teacher |" in summary  # the route split
    assert "Time to first token" in summary
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "locust_stats.csv").is_file()
