"""The lifecycle's rule and the registry that keeps it: every legal move, every illegal one
refused, each change one write with its evidence. The fast tier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.loop.lifecycle import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    State,
    TrialState,
    transition,
)
from gateway.loop.registry import Manifest, Registry

FINAL = {State.REJECTED, State.BAD}


def test_the_table_is_the_rule() -> None:
    for (state, event), targets in TRANSITIONS.items():
        for target in targets:
            assert transition(state, event, target) == target
        if len(targets) == 1:
            assert transition(state, event) in targets
        else:  # the task's trial picks; the event alone does not say
            with pytest.raises(IllegalTransition, match="needs its target"):
                transition(state, event)
    for state in State:
        for event in Event:
            if (state, event) not in TRANSITIONS:
                with pytest.raises(IllegalTransition, match="cannot happen"):
                    transition(state, event)
    assert not any(state in FINAL for state, _ in TRANSITIONS)  # rejected and bad are final
    with pytest.raises(IllegalTransition, match="not"):
        transition(State.CANDIDATE, Event.GATE_PASSED, State.RETIRED)


def add(registry: Registry) -> str:
    version = registry.next_version()
    registry.add(Manifest(version, None, "2026-12-05T00:00:00+00:00"), reason="round r1")
    return version


def test_a_promotion_is_one_write_that_retires_serves_and_ends_the_trial(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "t")
    v1, v2 = add(registry), add(registry)
    registry.pass_gate(v1, None, "gate passed", {"coverage": 0.9})
    trial = TrialState(v2, State.CANARY, 0.2, 0, 1.0)
    registry.pass_gate(v2, trial, "gate passed", {"coverage": 0.95})
    assert registry.trial() == trial and registry.version(v2).state == State.CANARY
    writes = []
    registry._commit = lambda change, write=registry._commit: (writes.append(1), write(change))  # type: ignore[method-assign]
    registry.stage_held(trial, None, "canary held", {"audits": 80, "agreement": 0.99})
    assert len(writes) == 1
    state = json.loads((tmp_path / "t" / "state.json").read_text())
    assert state["serving"] == v2 and state["trial"] is None and state["history"] == [v1, v2]
    assert registry.version(v1).state == State.RETIRED
    last = registry.version(v2).transitions[-1]
    assert (last.event, last.source, last.target) == ("stage_holds", "canary", "serving")
    assert last.evidence == {"audits": 80, "agreement": 0.99}
    assert registry.version(v2).gate == {"coverage": 0.95}
    assert [t.event for t in registry.version(v1).transitions] == [
        "added",
        "gate_passed",
        "superseded",
    ]


def test_an_illegal_event_changes_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "t")
    v1 = add(registry)
    registry.pass_gate(v1, None, "gate passed", {})
    before = (tmp_path / "t" / "state.json").read_text()
    with pytest.raises(IllegalTransition):
        registry.reject(v1, Event.GATE_FAILED, "a second gate on a serving version")
    with pytest.raises(IllegalTransition):
        registry.stage_fell(TrialState(v1, State.CANARY, 0.5, 0, 0.0), Event.STAGE_FALLS, "no")
    assert (tmp_path / "t" / "state.json").read_text() == before


def test_a_rollback_restores_the_last_good_version_and_ends_the_trial_it_gated(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path, "t")
    v1, v2, v3 = add(registry), add(registry), add(registry)
    registry.pass_gate(v1, None, "", {})
    registry.pass_gate(v2, None, "", {})
    registry.pass_gate(v3, TrialState(v3, State.SHADOW, 0.5, 0, 0.0), "", {})
    back = registry.roll_back("audits fell", {"agreement": 0.8})
    assert back is not None and back.version == v1 and registry.trial() is None
    states = {v.name: v.state for v in registry.versions()}
    assert states == {v1: State.SERVING, v2: State.BAD, v3: State.REJECTED}
    assert registry.version(v3).transitions[-1].event == Event.BASELINE_LOST
    assert registry.roll_back("again") is None and registry.serving() is None


def test_a_registry_from_before_the_lifecycle_reads_as_the_state_it_described(
    tmp_path: Path,
) -> None:
    task = tmp_path / "t"
    for version, status in (("v0001", "retired"), ("v0002", "serving"), ("v0003", "trial")):
        folder = task / "versions" / version
        folder.mkdir(parents=True)
        manifest = {"version": version, "parent": None, "created_at": "x", "status": status}
        (folder / "manifest.json").write_text(json.dumps(manifest | {"gate": {"n": 1}}))
    serving = {"version": "v0002", "history": ["v0001", "v0002"], "updated_at": "y"}
    (task / "serving.json").write_text(json.dumps(serving))
    trial = {"version": "v0003", "stage": "canary", "share": 0.1, "step": 0, "since": 5.0}
    (task / "trial.json").write_text(json.dumps(trial))
    (task / "rounds.jsonl").write_text(
        json.dumps({"outcome": "on_trial", "records_seen": 420, "finished_at": "z"}) + "\n"
    )
    registry = Registry(tmp_path, "t")
    assert registry.serving().version == "v0002"  # type: ignore[union-attr]
    assert registry.trial() == TrialState("v0003", State.CANARY, 0.1, 0, 5.0)
    assert registry.version("v0001").state == State.RETIRED
    assert registry.cursor().records_seen == 420
    registry.stage_held(registry.trial(), None, "held", {})  # type: ignore[arg-type]
    assert registry.serving().version == "v0003"  # type: ignore[union-attr]
    assert registry.version("v0002").state == State.RETIRED
