"""Crash-safe at every step: a real loop worker process is SIGKILLed at each point of a round,
a promotion, a rollback and a trial, then started again. Every time the registry must be
consistent: what serves (and what is on trial) is a complete version in the state that
says so, every version's history is a legal walk through the lifecycle, no candidate is
left pretending a round is building it, and the loop ends where an uninterrupted one does."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.loop.lifecycle import State, TrialState, transition
from gateway.loop.registry import Registry, served
from tests.conftest import ROOT, TinyStudent
from tests.loop_crash import make_task
from tests.loop_fleet import add_version, promote

DRIVER = ROOT / "tests" / "loop_crash.py"

KILLS = [
    # a first student: trained, calibrated, gated, promoted
    ("first-student", "after-training"),
    ("first-student", "after-calibration"),
    ("first-student", "after-gate"),
    ("first-student", "state-write:2"),  # mid-promotion: the new state written, not renamed
    ("first-student", "before-cursor"),
    # a version whose audits fall is rolled back to the one before it
    ("rollback", "state-write:1"),
    # a canary whose audits hold is promoted, retiring the version before it
    ("trial", "state-write:1"),
]

ENDS = {  # where the loop ends as it would have without a kill: the versions set up by hand
    "rollback": {"v0001": State.SERVING, "v0002": State.BAD},
    "trial": {"v0001": State.RETIRED, "v0002": State.SERVING},
}


def worker(root: Path, student: Path, scenario: str, kill: str | None = None) -> int:
    cmd = [sys.executable, str(DRIVER), str(root), str(student), scenario]
    done = subprocess.run(
        cmd + (["--kill", kill] if kill else []), capture_output=True, timeout=600
    )
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(done.stderr.decode()[-3000:])
    return done.returncode


def set_up(root: Path, scenario: str, student: Path) -> Registry:
    registry = Registry(root / "registry", "banking77")
    if scenario == "rollback":  # v0001 good, then v0002 (its audits will disagree) serves
        promote(registry, add_version(registry, student))
        promote(registry, add_version(registry, student))
    if scenario == "trial":  # v0001 serves, v0002 on its one canary step
        promote(registry, add_version(registry, student))
        v2 = add_version(registry, student)
        registry.pass_gate(v2, TrialState(v2, State.CANARY, 0.5, 0, 0.0), "gate passed", {})
    return registry


def check_consistent(
    registry: Registry, root: Path, scenario: str, student: Path, *, candidates: int = 0
) -> None:
    """``candidates``: how many may be left building (by a round that was killed, until the
    next round rejects them): never served, never more than the one round's."""
    versions = {v.name: v for v in registry.versions()}
    for version in versions.values():  # each history a legal walk from "candidate"
        assert version.transitions[0].target == State.CANDIDATE
        for before, step in zip(version.transitions, version.transitions[1:], strict=False):
            assert step.source == before.target
            assert transition(State(step.source), step.event, State(step.target)) == step.target
        assert version.state == version.transitions[-1].target
    assert len([v for v in versions.values() if v.state == State.CANDIDATE]) <= candidates
    serving, trial = registry.serving(), registry.trial()
    shown = [(serving.version, State.SERVING)] if serving else []
    shown += [(trial.version, trial.stage)] if trial else []
    for name, state in shown:
        assert versions[name].state == state
        assert (registry.student_dir(name) / "config.json").is_file()
        assert (registry.student_dir(name) / "model.safetensors").is_file()
        assert registry.calibrator(name).is_file()
    # what a gateway would load: the serving version's folder, whole
    task = served(make_task(root, student, scenario))
    if serving is not None:
        assert task.student_version == serving.version and task.student.is_dir()


@pytest.mark.parametrize(("scenario", "kill"), KILLS, ids=[f"{s}-{k}" for s, k in KILLS])
def test_a_worker_killed_anywhere_leaves_a_registry_that_tells_the_truth(
    tmp_path: Path, tiny_student: TinyStudent, scenario: str, kill: str
) -> None:
    student = tmp_path / "student"
    subprocess.run(["cp", "-r", str(tiny_student.path), str(student)], check=True)
    registry = set_up(tmp_path, scenario, student)

    assert worker(tmp_path, student, scenario, kill) == -signal.SIGKILL
    check_consistent(registry, tmp_path, scenario, student, candidates=1)

    assert worker(tmp_path, student, scenario) == 0  # started again, it carries on
    check_consistent(registry, tmp_path, scenario, student)
    states = {v.name: v.state for v in registry.versions()}
    if scenario == "first-student":  # a first student serves: the round's, or the rerun's
        assert list(states.values()).count(State.SERVING) == 1
        assert states[max(states)] == State.SERVING
    else:
        assert {name: states[name] for name in ENDS[scenario]} == ENDS[scenario]
    interrupted = [v for v in registry.versions() if v.transitions[-1].event == "interrupted"]
    assert all(v.state == State.REJECTED for v in interrupted)
    if kill in ("after-training", "after-calibration", "after-gate"):
        assert interrupted, "the candidate the dead round left is rejected, with why"
