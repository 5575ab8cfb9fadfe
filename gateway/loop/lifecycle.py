"""The life of a task's student versions, in one place: states, events, one transition rule.

A round adds its candidate before training it; from then on the version only moves by the
events below, each computed by the worker from evidence (a gate result, a sequential test
over live answers) and applied by the registry in one atomic write::

    state       event              next state
    ─────────── ────────────────── ──────────────────────────────────────────────
    candidate   build_failed       rejected    training or calibration failed
    candidate   interrupted        rejected    its round died; the next one starts anew
    candidate   gate_failed        rejected
    candidate   gate_passed        shadow | canary | serving   (the task's first stage)
    shadow      stage_holds        canary | serving
    canary      stage_holds        canary (next share) | serving
    shadow      stage_falls        rejected
    canary      stage_falls        rejected
    shadow      baseline_lost      rejected    the version it was gated against rolled back
    canary      baseline_lost      rejected
    serving     superseded         retired     another version was promoted
    serving     rolled_back        bad         its live audits fell below the target
    retired     restored           serving     the last good version, after a rollback

rejected and bad are final. Only serving, shadow and canary versions ever take traffic,
and a version reaches them only once its folder is complete: a gateway cannot serve half
a version, whatever step a worker dies at.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.tasks import LoopPolicy

__all__ = [
    "TRANSITIONS",
    "Event",
    "IllegalTransition",
    "State",
    "TrialState",
    "first_stage",
    "next_stage",
    "transition",
]


class State(StrEnum):
    CANDIDATE = "candidate"
    SHADOW = "shadow"
    CANARY = "canary"
    SERVING = "serving"
    RETIRED = "retired"
    REJECTED = "rejected"
    BAD = "bad"


class Event(StrEnum):
    BUILD_FAILED = "build_failed"
    INTERRUPTED = "interrupted"
    GATE_FAILED = "gate_failed"
    GATE_PASSED = "gate_passed"
    STAGE_HOLDS = "stage_holds"
    STAGE_FALLS = "stage_falls"
    BASELINE_LOST = "baseline_lost"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"
    RESTORED = "restored"


S, E = State, Event
TRIED = frozenset({S.SHADOW, S.CANARY})
TRANSITIONS: dict[tuple[State, Event], frozenset[State]] = {
    (S.CANDIDATE, E.BUILD_FAILED): frozenset({S.REJECTED}),
    (S.CANDIDATE, E.INTERRUPTED): frozenset({S.REJECTED}),
    (S.CANDIDATE, E.GATE_FAILED): frozenset({S.REJECTED}),
    (S.CANDIDATE, E.GATE_PASSED): frozenset({S.SHADOW, S.CANARY, S.SERVING}),
    (S.SHADOW, E.STAGE_HOLDS): frozenset({S.CANARY, S.SERVING}),
    (S.CANARY, E.STAGE_HOLDS): frozenset({S.CANARY, S.SERVING}),
    (S.SHADOW, E.STAGE_FALLS): frozenset({S.REJECTED}),
    (S.CANARY, E.STAGE_FALLS): frozenset({S.REJECTED}),
    (S.SHADOW, E.BASELINE_LOST): frozenset({S.REJECTED}),
    (S.CANARY, E.BASELINE_LOST): frozenset({S.REJECTED}),
    (S.SERVING, E.SUPERSEDED): frozenset({S.RETIRED}),
    (S.SERVING, E.ROLLED_BACK): frozenset({S.BAD}),
    (S.RETIRED, E.RESTORED): frozenset({S.SERVING}),
}


class IllegalTransition(ValueError):
    """An event that cannot happen to a version in its state: a bug, or two writers."""


def transition(state: State, event: Event, to: State | None = None) -> State:
    """The state after ``event``. ``to`` picks among the allowed next states where the
    task's trial decides (which stage comes first or next); it must be one of them."""
    allowed = TRANSITIONS.get((state, event))
    if allowed is None:
        raise IllegalTransition(f"{event} cannot happen to a {state} version")
    if to is None:
        if len(allowed) > 1:
            raise IllegalTransition(f"{event} from {state} needs its target: one of {allowed}")
        (to,) = allowed
    elif to not in allowed:
        raise IllegalTransition(f"{event} takes a {state} version to {sorted(allowed)}, not {to}")
    return to


@dataclass(frozen=True)
class TrialState:
    """A candidate that passed the gate, tried on live traffic before it serves it all."""

    version: str
    stage: State  # shadow or canary
    share: float
    step: int  # which canary step (0 in shadow)
    since: float  # when this stage began (Unix time): only evidence after it counts


def first_stage(policy: LoopPolicy, version: str, since: float) -> TrialState | None:
    """Where a candidate that passed the gate goes: shadow (``shadow_share``: answers off
    the request path, scored against the teacher), else the first canary share, else
    (None) straight to serving."""
    if policy.shadow_share > 0:
        return TrialState(version, S.SHADOW, policy.shadow_share, 0, since)
    if policy.canary_steps:
        return TrialState(version, S.CANARY, policy.canary_steps[0], 0, since)
    return None


def next_stage(policy: LoopPolicy, trial: TrialState, since: float) -> TrialState | None:
    """The stage after ``trial`` held (None: the candidate is promoted)."""
    steps = policy.canary_steps
    step = 0 if trial.stage == S.SHADOW else trial.step + 1
    if step >= len(steps):
        return None
    return TrialState(trial.version, S.CANARY, steps[step], step, since)
