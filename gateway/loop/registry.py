"""The versioned registry of a task's students: one folder per task, one per version.

    <registry>/<task>/
        versions/v0001/{student/, calibration.json, manifest.json}
        serving.json        {"version": "v0002", "history": ["v0001", "v0002"], ...}
        trial.json          the candidate on trial, if any: {"version", "stage", "share", ...}
        rounds.jsonl        one report per round, promoted or not, and per trial decision

Every write is a whole file replaced atomically (``os.replace``), and a version folder is
complete before it is renamed into ``versions/``, so a reader (every gateway replica polls
``serving.json``) never sees half a version or half a pointer. On Kubernetes the registry is
a shared volume; the pointer is the one source of truth for what serves.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.tasks import Task, Trial

__all__ = ["Manifest", "Registry", "Serving", "TrialState", "served", "served_tasks"]

Status = Literal["serving", "retired", "rejected", "bad", "trial"]


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically: readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


@dataclass
class Manifest:
    version: str
    parent: str | None
    created_at: str
    status: Status
    trained_on: dict[str, Any] = field(default_factory=dict)  # captured pairs, labelled files
    gate: dict[str, Any] = field(default_factory=dict)
    calibrator_version: str | None = None
    reason: str = ""  # why rejected or marked bad
    promoted_at: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Manifest:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


@dataclass(frozen=True)
class Serving:
    version: str
    history: tuple[str, ...]  # promoted versions, oldest first; the last one serves
    updated_at: str


@dataclass(frozen=True)
class TrialState:
    """A candidate that passed the gate, tried on live traffic before it serves it all."""

    version: str
    stage: Literal["shadow", "canary"]
    share: float
    step: int  # which canary step (0 in shadow)
    since: float  # when this stage began (Unix time): only evidence after it counts


class Registry:
    def __init__(self, root: Path, task: str) -> None:
        self.dir = root / task
        self.versions_dir = self.dir / "versions"

    # -- reading ---------------------------------------------------------------------------
    def serving(self) -> Serving | None:
        try:
            raw = json.loads((self.dir / "serving.json").read_text())
        except FileNotFoundError:
            return None
        return Serving(raw["version"], tuple(raw["history"]), raw["updated_at"])

    def trial(self) -> TrialState | None:
        try:
            raw = json.loads((self.dir / "trial.json").read_text())
        except FileNotFoundError:
            return None
        return TrialState(**raw)

    def student_dir(self, version: str) -> Path:
        return self.versions_dir / version / "student"

    def calibrator(self, version: str) -> Path:
        return self.versions_dir / version / "calibration.json"

    def manifest(self, version: str) -> Manifest:
        return Manifest.from_dict(
            json.loads((self.versions_dir / version / "manifest.json").read_text())
        )

    def manifests(self) -> list[Manifest]:
        if not self.versions_dir.is_dir():
            return []
        return [
            self.manifest(p.name)
            for p in sorted(self.versions_dir.iterdir())
            if (p / "manifest.json").is_file()
        ]

    def rounds(self, last: int = 20) -> list[dict[str, Any]]:
        try:
            lines = (self.dir / "rounds.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines[-last:] if line.strip()]

    # -- writing ---------------------------------------------------------------------------
    def next_version(self) -> str:
        taken = [int(p.name[1:]) for p in self.versions_dir.glob("v[0-9]*")]
        staged = [int(p.name[1:]) for p in (self.dir / "staging").glob("v[0-9]*")]
        return f"v{max([0, *taken, *staged]) + 1:04d}"

    def staging(self, version: str) -> Path:
        """Where a round builds a version (student/, calibration.json) before ``add``."""
        path = self.dir / "staging" / version
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, manifest: Manifest) -> Path:
        """Move the staged version into ``versions/`` with its manifest, in one rename."""
        staged = self.dir / "staging" / manifest.version
        write_json(staged / "manifest.json", asdict(manifest))
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        final = self.versions_dir / manifest.version
        os.replace(staged, final)
        return final

    def discard(self, version: str) -> None:
        shutil.rmtree(self.dir / "staging" / version, ignore_errors=True)

    def set_status(self, version: str, status: Status, reason: str = "") -> None:
        manifest = self.manifest(version)
        manifest.status, manifest.reason = status, reason or manifest.reason
        write_json(self.versions_dir / version / "manifest.json", asdict(manifest))

    def promote(self, version: str) -> Serving:
        """Point serving at ``version``: the one write every replica follows (it ends the
        version's trial, if it had one)."""
        current = self.serving()
        history = (*current.history, version) if current else (version,)
        if current is not None:
            self.set_status(current.version, "retired")
        manifest = self.manifest(version)
        manifest.status, manifest.promoted_at = "serving", now()
        write_json(self.versions_dir / version / "manifest.json", asdict(manifest))
        serving = Serving(version, history, now())
        write_json(self.dir / "serving.json", asdict(serving))
        trial = self.trial()
        if trial is not None and trial.version == version:
            (self.dir / "trial.json").unlink()
        return serving

    def start_trial(self, trial: TrialState) -> None:
        self.set_status(trial.version, "trial")
        write_json(self.dir / "trial.json", asdict(trial))

    def reject_trial(self, reason: str) -> None:
        """End the trial: the candidate is rejected with ``reason``; nothing else changes."""
        trial = self.trial()
        if trial is None:
            return
        self.set_status(trial.version, "rejected", reason)
        (self.dir / "trial.json").unlink()

    def roll_back(self, reason: str) -> Serving | None:
        """Mark the serving version bad and serve the last good one before it (None: back to
        no student, the teacher answers)."""
        current = self.serving()
        if current is None:
            return None
        self.set_status(current.version, "bad", reason)
        earlier = [v for v in current.history[:-1] if self.manifest(v).status != "bad"]
        if not earlier:
            (self.dir / "serving.json").unlink()
            return None
        back = earlier[-1]
        self.set_status(back, "serving")
        serving = Serving(back, (*current.history, back), now())
        write_json(self.dir / "serving.json", asdict(serving))
        return serving

    def record_round(self, report: Mapping[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "rounds.jsonl").open("a") as f:
            f.write(json.dumps(report) + "\n")


def served(task: Task) -> Task:
    """``task`` pointing at its registry's serving version, when it has a loop and one."""
    if task.loop is None:
        return task
    registry = Registry(task.loop.registry, task.name)
    serving, trial = registry.serving(), registry.trial()
    if serving is None and trial is None:
        return task if task.trial is None else task.model_copy(update={"trial": None})
    update: dict[str, Any] = {"trial": None}
    if serving is not None:
        update |= {
            "student": registry.student_dir(serving.version),
            "calibrator": registry.calibrator(serving.version),
            "student_version": serving.version,
        }
    if trial is not None:
        update["trial"] = Trial(
            version=trial.version,
            stage=trial.stage,
            share=trial.share,
            student=registry.student_dir(trial.version),
            calibrator=registry.calibrator(trial.version),
        )
    return task.model_copy(update=update)


def served_tasks(tasks: Mapping[str, Task]) -> dict[str, Task]:
    return {name: served(task) for name, task in tasks.items()}
