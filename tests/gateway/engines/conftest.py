"""The fleet: a real OpenAI-compatible server for the remote engine to talk to."""

from __future__ import annotations

import pytest

from gateway.settings import Settings
from tests.conftest import Gateway


@pytest.fixture(scope="module")
def fleet(tiny_student, run_gateway, tmp_path_factory: pytest.TempPathFactory) -> Gateway:  # type: ignore[no-untyped-def]
    """A gateway serving the tiny student as a plain model: whole conversations, no
    calibrator, no teacher (every answer is the student's, as a vLLM server's would be)."""
    tasks = tmp_path_factory.mktemp("fleet")
    (tasks / "student.toml").write_text(
        f'student = "{tiny_student.path}"\n[prompt]\ninput = "conversation"\n'
        "[generation]\nmax_tokens = 64\n"
    )
    settings = Settings(tasks_dir=tasks, redis_url="", max_batch_size=32, max_waiting=64)
    return run_gateway(settings)  # type: ignore[no-any-return]
