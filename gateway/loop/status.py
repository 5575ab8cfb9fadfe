"""What ``distillgate loop status`` and ``/admin/status`` say about a task's loop."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gateway.loop.registry import Registry
from gateway.tasks import Task

__all__ = ["loop_status"]


def loop_status(task: Task, rounds: int = 10) -> dict[str, Any]:
    """The serving version, every version with its lineage and gate figures, the last rounds."""
    assert task.loop is not None
    registry = Registry(task.loop.registry, task.name)
    serving, trial = registry.serving(), registry.trial()
    return {
        "registry": str(registry.dir),
        "serving": serving.version if serving else None,
        "history": list(serving.history) if serving else [],
        "trial": asdict(trial) if trial else None,
        "versions": [
            {
                "version": v.name,
                "parent": v.manifest.parent,
                "status": v.state.value,
                "created_at": v.manifest.created_at,
                "coverage": v.gate.get("coverage"),
                "accepted_accuracy": v.gate.get("accepted_accuracy"),
                "reason": v.reason,
                "transitions": [
                    {"at": t.at, "event": t.event, "to": t.target} for t in v.transitions
                ],
            }
            for v in registry.versions()
        ],
        "rounds": [
            {k: r.get(k) for k in ("started_at", "trigger", "outcome", "reason", "candidate")}
            for r in registry.rounds(rounds)
        ],
    }
