"""Settings that decide where state lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.settings import Settings


def test_the_default_spool_is_absolute_and_the_same_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISTILLGATE_SPOOL_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    seen = set()
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        monkeypatch.chdir(folder)
        seen.add(Settings(port=8000).spool_path)
    assert seen == {tmp_path / "state" / "distillgate" / "spool" / "port-8000"}
    assert Settings(port=8001).spool_path != Settings(port=8000).spool_path


def test_without_xdg_state_home_the_spool_is_under_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTILLGATE_SPOOL_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    path = Settings().spool_path
    assert path.is_absolute() and path.is_relative_to(Path.home() / ".local" / "state")


def test_an_explicit_spool_dir_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLGATE_SPOOL_DIR", str(tmp_path / "mine"))
    assert Settings().spool_path == tmp_path / "mine"
    assert os.fspath(Settings(spool_dir=tmp_path / "x").spool_path) == str(tmp_path / "x")
