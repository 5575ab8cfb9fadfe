"""Gateway processes following one registry, for the loop's fleet tests: a version added by
hand, the task file with its ``[loop]``, and N real ``distillgate serve`` processes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from gateway.examples import write_examples
from gateway.loop.registry import Manifest, Registry
from tests.conftest import TinyStudent, free_port, serve_process, write_calibrator, write_task
from tests.redis_server import RedisServer

__all__ = ["add_version", "loop_gateways", "loop_task", "promote", "stop"]


def add_version(registry: Registry, student: Path) -> str:
    """A candidate: a copy of ``student`` with a hand-set calibrator."""
    version = registry.next_version()
    folder = registry.add(Manifest(version, None, "2026-12-02T00:00:00+00:00"))
    shutil.copytree(student, folder / "student")
    write_calibrator(folder / "calibration.json", folder / "student")
    return version


def promote(registry: Registry, version: str) -> None:
    """A candidate straight to serving, as a gate with no trial would send it."""
    registry.pass_gate(version, None, "passed by hand", {"promote": True})


def loop_task(
    tmp_path: Path, loop: str = "", teacher: TinyStudent | None = None, extra: str = ""
) -> Path:
    """Task banking77 in tmp_path/tasks with no student of its own and its registry in
    tmp_path/registry; ``teacher``: the simulator answering from that student's data."""
    sections = f'[loop]\nregistry = "{tmp_path / "registry"}"\n{loop}'
    if teacher is not None:
        known = tmp_path / "teacher-knows.jsonl"
        write_examples(known, [*teacher.train, *teacher.test])
        sections += (
            f'[teacher]\napi_key_env = "DISTILLGATE_TEST_UNSET"\nsimulator_data = ["{known}"]\n'
        )
    write_task(tmp_path / "tasks", tmp_path / "no-student", extra=sections + extra)
    return tmp_path / "tasks"


def loop_gateways(
    tmp_path: Path, redis: RedisServer, n: int, poll_s: float
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """``n`` gateways (the loop off: they only follow the registry), each its own spool."""
    env = {"DISTILLGATE_LOOP": "off", "DISTILLGATE_REGISTRY_POLL_S": str(poll_s)}
    ports = [free_port() for _ in range(n)]
    procs = [
        serve_process(
            tmp_path,
            redis,
            port,
            env={**env, "DISTILLGATE_SPOOL_DIR": str(tmp_path / f"spool{port}")},
        )
        for port in ports
    ]
    return procs, [f"http://127.0.0.1:{port}" for port in ports]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)
