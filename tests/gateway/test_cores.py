"""Serving and the loop share the cores without oversubscribing them (nothing is timed:
the thread counts and priorities are read back)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway import cores
from gateway.app.engines import beside_the_loop
from gateway.cores import CoreWatch, serving_threads
from gateway.runtime.loop_processes import LoopProcesses
from gateway.settings import Settings
from gateway.tasks import load_tasks
from tests.conftest import ROOT


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 64])
def test_the_student_engine_takes_only_the_cores_a_running_round_leaves(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's own tasks, as `serve` starts them: the engine's torch threads plus the
    loop's trainer threads never exceed the machine's cores (one engine thread at least)."""
    monkeypatch.setattr("gateway.app.engines.available_cores", lambda: n)
    settings = Settings(tasks_dir=ROOT / "tasks")
    tasks = [t for t in load_tasks(settings.tasks_dir).values() if t.loop is not None]
    workers = LoopProcesses(settings, tasks)
    reserved = workers.threads()
    assert reserved == max(t.loop.train_threads for t in tasks if t.loop)  # they take turns
    threads = beside_the_loop(settings, workers).torch_threads
    assert threads is not None
    assert threads + reserved <= n or threads == 1
    assert threads == serving_threads(n, reserved)
    # A count the operator set is kept; with the loop run elsewhere, nothing is reserved.
    told = Settings(tasks_dir=ROOT / "tasks", torch_threads=7)
    assert beside_the_loop(told, workers).torch_threads == 7
    apart = Settings(tasks_dir=ROOT / "tasks", loop="off")
    assert beside_the_loop(apart, workers).torch_threads is None


def test_rounds_that_do_not_take_turns_reserve_every_trainer(tmp_path: Path) -> None:
    settings = Settings(tasks_dir=ROOT / "tasks")
    tasks = [
        t.model_copy(update={"loop": t.loop.model_copy(update={"one_round_at_a_time": False})})
        for t in load_tasks(settings.tasks_dir).values()
        if t.loop is not None
    ]
    assert LoopProcesses(settings, tasks).threads() == sum(
        t.loop.train_threads for t in tasks if t.loop
    )


def test_a_training_run_follows_the_cores_other_processes_leave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/stat says how busy the process's cores were; its own CPU time is taken out."""
    stat = tmp_path / "stat"
    monkeypatch.setattr(cores, "_PROC_STAT", stat)
    clock = SimpleNamespace(now=100.0, own=0.0)
    monkeypatch.setattr(cores.time, "monotonic", lambda: clock.now)
    monkeypatch.setattr(cores.os, "times", lambda: SimpleNamespace(user=clock.own, system=0.0))
    ticks = os.sysconf("SC_CLK_TCK")

    def busy(seconds: float) -> None:  # cumulative busy seconds of cpu0 + cpu1
        half = int(seconds * ticks / 2)
        rows = [f"cpu{i} {half} 0 0 100000 0 0 0 0 0 0" for i in (0, 1)]
        stat.write_text("\n".join(["cpu  0 0 0 0 0 0 0 0 0 0", *rows]) + "\n")

    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda _: {0, 1})
    busy(0)
    watch = CoreWatch(cores=2, interval_s=5)
    clock.now, clock.own = 110.0, 20.0
    busy(20)  # both cores busy 10 s, all of it this process: nobody else
    assert watch.poll() == 2
    clock.now, clock.own = 112.0, 22.0
    busy(22)
    assert watch.poll() is None  # too soon to measure again
    clock.now, clock.own = 120.0, 30.0
    busy(40)  # 20 s busy in 10 s, 10 of it someone else's: one core left
    assert watch.poll() == 1
    clock.now = 130.0
    busy(60)  # another process takes both cores: still one thread, never none
    assert watch.poll() == 1


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_loop_process_runs_at_idle_priority(tmp_path: Path) -> None:
    """`serve`'s loop child lowers itself (its trainer and replays inherit the policy)."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.toml").write_text(
        'description = "x"\nstudent = "none"\nanswers = ["a", "b"]\n'
        f'[loop]\nregistry = "{tmp_path / "registry"}"\npoll_s = 60\n'
    )
    env = {**os.environ, "DISTILLGATE_TASKS_DIR": str(tasks), "DISTILLGATE_REDIS_URL": ""}
    child = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "loop", "--task", "t"], env=env, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 180  # a loaded machine starts it slowly
        while os.sched_getscheduler(child.pid) != os.SCHED_IDLE:
            assert child.poll() is None, "the loop exited"
            assert time.monotonic() < deadline, "the loop never lowered itself"
            time.sleep(0.1)
    finally:
        child.terminate()
        child.wait(30)
