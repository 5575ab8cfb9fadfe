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
                "version": m.version,
                "parent": m.parent,
                "status": m.status,
                "created_at": m.created_at,
                "coverage": m.gate.get("coverage"),
                "accepted_accuracy": m.gate.get("accepted_accuracy"),
                "reason": m.reason,
            }
            for m in registry.manifests()
        ],
        "rounds": [
            {k: r.get(k) for k in ("started_at", "trigger", "outcome", "reason", "candidate")}
            for r in registry.rounds(rounds)
        ],
    }
