"""What holds for the vLLM engine on any machine: the gateway never imports vllm, and a task
that asks for vLLM where it is missing stops start-up with a plain message. Its behaviour
is the vLLM tier's (``-m vllm``: the conformance suite's ``vllm`` case, tests/test_vllm_*)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.engines.vllm import vllm_available
from gateway.tasks import VLLMEngineConfig, load_tasks
from tests.conftest import write_task


def test_importing_the_gateway_never_imports_vllm() -> None:
    code = (
        "import sys, gateway.app, gateway.cli, gateway.engines.factory, gateway.engines.vllm\n"
        "assert 'vllm' not in sys.modules, 'vllm was imported'\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_vllm_task_parses_its_engine_arguments(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        tmp_path / "student",
        extra='[engine]\nkind = "vllm"\nmax_model_len = 512\nmax_num_seqs = 64\n',
    )
    engine = load_tasks(tmp_path)["banking77"].engine
    assert isinstance(engine, VLLMEngineConfig)
    assert (engine.max_model_len, engine.max_num_seqs, engine.max_logprobs) == (512, 64, 20)


@pytest.mark.skipif(vllm_available(), reason="vllm is installed here")
def test_a_vllm_task_without_vllm_stops_start_up_clearly(tiny_student, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_task(tmp_path, tiny_student.path, extra='[engine]\nkind = "vllm"\n')
    env = {**os.environ, "DISTILLGATE_TASKS_DIR": str(tmp_path), "DISTILLGATE_REDIS_URL": ""}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "pip install 'distillgate[gpu]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_offline_jobs_open_the_tasks_own_engine_kind(tiny_student, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """calibrate, evaluate and the loop's gate replay on the engine kind that serves the
    task (a remote fleet serves only what is deployed to it: the embedded engine replays
    its students)."""
    from gateway.engines.factory import replay_engine
    from gateway.engines.transformers import TransformersEngine

    remote = '[engine]\nkind = "remote"\nbase_url = "http://127.0.0.1:9/v1"\n'
    write_task(tmp_path / "remote", tiny_student.path, extra=remote)
    task = load_tasks(tmp_path / "remote")["banking77"]
    assert isinstance(replay_engine(task)(tiny_student.path, 8), TransformersEngine)
    write_task(tmp_path / "vllm", tiny_student.path, extra='[engine]\nkind = "vllm"\n')
    task = load_tasks(tmp_path / "vllm")["banking77"]
    if vllm_available():
        from gateway.engines.vllm import VLLMEngine

        assert isinstance(replay_engine(task)(tiny_student.path, 8), VLLMEngine)
    else:
        with pytest.raises(RuntimeError, match="pip install 'distillgate"):
            replay_engine(task)(tiny_student.path, 8)
