"""The versioned registry of a task's students: where the lifecycle (``lifecycle.py``) is kept.

    <registry>/<task>/
        state.json      every version's state and transitions (with their evidence), the
                        version serving and its history, the candidate on trial
        cursor.json     how many capture records the last round that trained had read
        versions/v0001/{manifest.json, student/, calibration.json, round/}
        rounds.jsonl    one report per round and per trial decision: a log, never read back
                        as state

Every change of state is one ``state.json`` replaced atomically (``os.replace``), so a
reader (every gateway replica polls it) sees the whole change or none of it: a promotion
retires the old version, serves the new one and ends its trial in one write. A version's
folder is filled while it is a candidate, which nothing serves. On Kubernetes the registry
is a shared volume.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.loop.lifecycle import Event, State, TrialState, transition
from gateway.tasks import Task, Trial

__all__ = [
    "Cursor",
    "Manifest",
    "Registry",
    "Serving",
    "Transition",
    "Version",
    "served",
    "served_tasks",
]

SERVED = frozenset({State.SERVING, State.SHADOW, State.CANARY})


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically: readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Manifest:
    """What a version is, written once when its round adds it."""

    version: str
    parent: str | None
    created_at: str
    trained_on: dict[str, Any] = field(default_factory=dict)  # captured pairs, labelled files

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Manifest:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


@dataclass(frozen=True)
class Transition:
    event: str
    source: str | None  # None: the version was added
    target: str
    at: str
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Version:
    """A version as the registry knows it: its manifest, its state and how it got there."""

    manifest: Manifest
    state: State
    transitions: tuple[Transition, ...]

    @property
    def name(self) -> str:
        return self.manifest.version

    @property
    def reason(self) -> str:
        """Why it was rejected or marked bad (or passed its gate)."""
        return self.transitions[-1].reason if self.transitions else ""

    @property
    def judged(self) -> Transition | None:
        """Its gate's verdict, with the gate's figures as evidence (None: never gated)."""
        gated = (Event.GATE_PASSED, Event.GATE_FAILED)
        return next((t for t in reversed(self.transitions) if t.event in gated), None)

    @property
    def gate(self) -> dict[str, Any]:
        return self.judged.evidence if self.judged else {}

    @property
    def promoted_at(self) -> str | None:
        return next((t.at for t in self.transitions if t.target == State.SERVING), None)


@dataclass(frozen=True)
class Serving:
    version: str
    history: tuple[str, ...]  # promoted versions, oldest first; the last one serves
    updated_at: str


@dataclass(frozen=True)
class Cursor:
    records_seen: int = 0
    round_finished_at: str = ""  # the last round that trained: schedule and drift count from it


@dataclass
class _Change:
    """One atomic write's worth of transitions and pointer moves."""

    raw: dict[str, Any]
    at: str = field(default_factory=now)

    def move(self, version: str, event: Event, to: State | None = None, **why: Any) -> State:
        entry = self.raw["versions"][version]
        source = State(entry["state"])
        target = transition(source, event, to)
        entry["state"] = target
        record = Transition(
            event, source, target, self.at, why.get("reason", ""), why.get("evidence", {})
        )
        entry["transitions"].append(asdict(record))
        trial = self.raw.get("trial")
        if (
            trial is not None
            and trial["version"] == version
            and target not in (State.SHADOW, State.CANARY)
        ):
            self.raw["trial"] = None
        return target

    def serve(self, version: str) -> None:
        self.raw["serving"], self.raw["serving_since"] = version, self.at
        self.raw["history"] = [*self.raw["history"], version]


class Registry:
    def __init__(self, root: Path, task: str) -> None:
        self.dir = root / task
        self.versions_dir = self.dir / "versions"

    # -- reading ---------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        try:
            raw: dict[str, Any] = json.loads((self.dir / "state.json").read_text())
        except FileNotFoundError:
            return _migrated(self) or {
                "serving": None,
                "history": [],
                "trial": None,
                "versions": {},
            }
        return raw

    def serving(self) -> Serving | None:
        raw = self.read()
        if raw["serving"] is None:
            return None
        return Serving(raw["serving"], tuple(raw["history"]), raw.get("serving_since", ""))

    def trial(self) -> TrialState | None:
        trial = self.read()["trial"]
        return None if trial is None else TrialState(**{**trial, "stage": State(trial["stage"])})

    def student_dir(self, version: str) -> Path:
        return self.versions_dir / version / "student"

    def calibrator(self, version: str) -> Path:
        return self.versions_dir / version / "calibration.json"

    def version(self, name: str) -> Version:
        entry = self.read()["versions"][name]
        return self._version(name, entry)

    def versions(self) -> list[Version]:
        return [self._version(n, e) for n, e in sorted(self.read()["versions"].items())]

    def _version(self, name: str, entry: Mapping[str, Any]) -> Version:
        manifest = Manifest.from_dict(
            json.loads((self.versions_dir / name / "manifest.json").read_text())
        )
        transitions = tuple(Transition(**t) for t in entry["transitions"])
        return Version(manifest, State(entry["state"]), transitions)

    def rounds(self, last: int = 20) -> list[dict[str, Any]]:
        try:
            lines = (self.dir / "rounds.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines[-last:] if line.strip()]

    def cursor(self) -> Cursor:
        try:
            return Cursor(**json.loads((self.dir / "cursor.json").read_text()))
        except FileNotFoundError:  # before cursor.json, the last round that trained said it
            trained = [r for r in self.rounds(1000) if r.get("kind") != "trial"]
            trained = [r for r in trained if r.get("outcome") != "skipped"]
            if not trained:
                return Cursor()
            return Cursor(int(trained[-1]["records_seen"]), str(trained[-1]["finished_at"]))

    # -- writing ---------------------------------------------------------------------------
    def _commit(self, change: _Change) -> None:
        change.raw["updated_at"] = change.at
        write_json(self.dir / "state.json", change.raw)

    def next_version(self) -> str:
        taken = [int(p.name[1:]) for p in self.versions_dir.glob("v[0-9]*")]
        return f"v{max([0, *taken]) + 1:04d}"

    def add(self, manifest: Manifest, **why: Any) -> Path:
        """A new candidate: its folder with its manifest, then its state. A folder left
        without a state (a worker died between the two) is never read and its number never
        reused."""
        folder = self.versions_dir / manifest.version
        folder.mkdir(parents=True)
        write_json(folder / "manifest.json", asdict(manifest))
        change = _Change(self.read())
        added = Transition(
            "added",
            None,
            State.CANDIDATE,
            change.at,
            why.get("reason", ""),
            why.get("evidence", {}),
        )
        change.raw["versions"][manifest.version] = {
            "state": State.CANDIDATE,
            "transitions": [asdict(added)],
        }
        self._commit(change)
        return folder

    def candidates(self) -> list[str]:
        return [n for n, e in self.read()["versions"].items() if e["state"] == State.CANDIDATE]

    def reject(
        self, version: str, event: Event, reason: str, evidence: Mapping[str, Any] | None = None
    ) -> None:
        """A candidate that failed its build or its gate, or whose round died."""
        change = _Change(self.read())
        change.move(version, event, reason=reason, evidence=dict(evidence or {}))
        self._commit(change)

    def pass_gate(
        self, version: str, stage: TrialState | None, reason: str, evidence: Mapping[str, Any]
    ) -> None:
        """On to the first stage of its trial, or (``stage`` None) straight to serving."""
        change = _Change(self.read())
        to = State.SERVING if stage is None else stage.stage
        self._enter(
            change, version, Event.GATE_PASSED, to, stage, reason=reason, evidence=dict(evidence)
        )
        self._commit(change)

    def stage_held(
        self,
        trial: TrialState,
        following: TrialState | None,
        reason: str,
        evidence: Mapping[str, Any],
    ) -> None:
        change = _Change(self.read())
        to = State.SERVING if following is None else following.stage
        self._enter(
            change,
            trial.version,
            Event.STAGE_HOLDS,
            to,
            following,
            reason=reason,
            evidence=dict(evidence),
        )
        self._commit(change)

    def stage_fell(
        self,
        trial: TrialState,
        event: Event,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> None:
        """The candidate on trial is rejected (its stage fell, or its baseline was lost);
        nothing else changes."""
        change = _Change(self.read())
        change.move(trial.version, event, reason=reason, evidence=dict(evidence or {}))
        self._commit(change)

    def _enter(
        self,
        change: _Change,
        version: str,
        event: Event,
        to: State,
        stage: TrialState | None,
        **why: Any,
    ) -> None:
        if to == State.SERVING:
            current = change.raw["serving"]
            if current is not None:
                change.move(current, Event.SUPERSEDED, reason=f"{version} promoted")
            change.move(version, event, to, **why)
            change.serve(version)
        else:
            assert stage is not None
            change.move(version, event, to, **why)
            change.raw["trial"] = asdict(stage)

    def roll_back(self, reason: str, evidence: Mapping[str, Any] | None = None) -> Serving | None:
        """Mark the serving version bad and serve the last good one before it (None: back to
        no student, the teacher answers); a candidate on trial, gated against the version
        that fell, is rejected with it. One write."""
        change = _Change(self.read())
        current = change.raw["serving"]
        if current is None:
            return None
        change.move(current, Event.ROLLED_BACK, reason=reason, evidence=dict(evidence or {}))
        trial = change.raw["trial"]
        if trial is not None:
            lost = f"the version it was gated against ({current}) was rolled back"
            change.move(trial["version"], Event.BASELINE_LOST, reason=lost)
        states = {n: State(e["state"]) for n, e in change.raw["versions"].items()}
        earlier = [v for v in change.raw["history"][:-1] if states.get(v) == State.RETIRED]
        change.raw["serving"] = None
        if earlier:
            change.move(earlier[-1], Event.RESTORED, reason=f"{current} rolled back")
            change.serve(earlier[-1])
        self._commit(change)
        return self.serving()

    def record_round(self, report: Mapping[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "rounds.jsonl").open("a") as f:
            f.write(json.dumps(report) + "\n")

    def advance_cursor(self, records_seen: int) -> None:
        write_json(self.dir / "cursor.json", asdict(Cursor(records_seen, now())))


def _migrated(registry: Registry) -> dict[str, Any] | None:
    """A registry written before state.json (serving.json, trial.json, a status in each
    manifest), read as the state it describes; the next change writes state.json."""
    manifests = sorted(registry.versions_dir.glob("v[0-9]*/manifest.json"))
    if not manifests:
        return None
    old: dict[str, Any] = {"trial": None, "serving": None}
    for name in ("serving", "trial"):
        path = registry.dir / f"{name}.json"
        if path.is_file():
            old[name] = json.loads(path.read_text())
    versions: dict[str, Any] = {}
    for path in manifests:
        raw = json.loads(path.read_text())
        state = raw.get("status", "rejected")
        if state == "trial":
            state = old["trial"]["stage"] if old["trial"] else State.REJECTED
        record = Transition(
            "migrated",
            None,
            state,
            raw.get("created_at", ""),
            raw.get("reason", ""),
            raw.get("gate", {}),
        )
        versions[path.parent.name] = {"state": state, "transitions": [asdict(record)]}
    serving = old["serving"]
    return {
        "serving": serving["version"] if serving else None,
        "history": serving["history"] if serving else [],
        "serving_since": serving["updated_at"] if serving else None,
        "trial": old["trial"],
        "versions": versions,
    }


def served(task: Task) -> Task:
    """``task`` pointing at its registry's serving version, when it has a loop and one."""
    if task.loop is None:
        return task
    registry = Registry(task.loop.registry, task.name)
    raw = registry.read()  # one read: the serving version and the trial of one moment
    serving, trial = raw["serving"], raw["trial"]
    if serving is None and trial is None:
        return task if task.trial is None else task.model_copy(update={"trial": None})
    update: dict[str, Any] = {"trial": None}
    if serving is not None:
        update |= {
            "student": registry.student_dir(serving),
            "calibrator": registry.calibrator(serving),
            "student_version": serving,
        }
    if trial is not None:
        update["trial"] = Trial(
            version=trial["version"],
            stage=trial["stage"],
            share=trial["share"],
            student=registry.student_dir(trial["version"]),
            calibrator=registry.calibrator(trial["version"]),
        )
    return task.model_copy(update=update)


def served_tasks(tasks: Mapping[str, Task]) -> dict[str, Task]:
    return {name: served(task) for name, task in tasks.items()}
