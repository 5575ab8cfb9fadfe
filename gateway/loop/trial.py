"""A candidate's trial on live traffic, stage by stage (both optional per task):

    gate passed ─▶ shadow (``shadow_share``: answers off the request path, scored against
                   the teacher) ─▶ canary (``canary_steps``: serves each share in turn, its
                   audits at ``trial_audit_rate``) ─▶ promoted

Each stage is held until the candidate's evidence since the stage began decides the SPRT
(``watch.watch_trial``): it holds (the next stage) or falls (the candidate is rejected and
nothing else changes).
"""

from __future__ import annotations

from gateway.loop.registry import TrialState
from gateway.tasks import LoopPolicy

__all__ = ["first_stage", "next_stage"]


def first_stage(policy: LoopPolicy, version: str, since: float) -> TrialState:
    if policy.shadow_share > 0:
        return TrialState(version, "shadow", policy.shadow_share, 0, since)
    return TrialState(version, "canary", policy.canary_steps[0], 0, since)


def next_stage(policy: LoopPolicy, trial: TrialState, since: float) -> TrialState | None:
    """The stage after ``trial`` held (None: the candidate is promoted)."""
    steps = policy.canary_steps
    step = 0 if trial.stage == "shadow" else trial.step + 1
    if step >= len(steps):
        return None
    return TrialState(trial.version, "canary", steps[step], step, since)
