"""A loop worker in a process of its own, which SIGKILLs itself at a chosen point (for
``test_loop_crash_safety.py``). Without ``--kill`` it steps until the loop has nothing left
to do, as a restarted worker would.

    python tests/loop_crash.py ROOT STUDENT SCENARIO [--kill POINT]

The points are places in the loop's own code, reached by wrapping the function named (the
process dies before it runs), or ``state-write:N``: the N-th atomic write of the registry's
state, killed after the new file is written beside the old one and before the rename.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.capture.base import CaptureRecord
from gateway.examples import write_examples
from gateway.loop import registry as registry_module
from gateway.loop import round as round_module
from gateway.loop.registry import Registry
from gateway.loop.worker import LoopWorker
from gateway.tasks import CapturePolicy, LoopPolicy, RoutingPolicy, Task
from tests.conftest import DATA, LABELS
from tests.gateway.loop.helpers import captured
from tests.test_loop import per_label

WRAPPED = {
    "after-training": (round_module, "score_set"),  # the trainer is done, nothing calibrated
    "after-calibration": (round_module, "judge"),  # calibrated, not gated
    "after-gate": (Registry, "pass_gate"),  # gated, its verdict not written
    "before-cursor": (Registry, "advance_cursor"),  # promoted, the cursor not moved
}


def die(*_: Any, **__: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    if point.startswith("state-write:"):
        target, seen = int(point.split(":")[1]), [0]
        replace = os.replace

        def replace_or_die(src: Any, dst: Any) -> None:
            if Path(dst).name == "state.json":
                seen[0] += 1
                if seen[0] == target:
                    die()
            replace(src, dst)

        registry_module.os.replace = replace_or_die  # type: ignore[assignment]
        return
    owner, name = WRAPPED[point]
    setattr(owner, name, die)


def make_task(root: Path, student: Path, scenario: str) -> Task:
    gate = root / "gate.jsonl"
    write_examples(gate, per_label(DATA / "test.jsonl", LABELS, 0, 30))
    copy = f"cp -r {student} {{out}}"  # the trainer: the tiny student, at once
    first = scenario == "first-student"
    return Task(
        name="banking77",
        student=root / "none",
        answers=LABELS,
        routing=RoutingPolicy(target_accuracy=0.8, delta=0.1),
        capture=CapturePolicy(holdout_share=0.4),
        loop=LoopPolicy(
            registry=root / "registry",
            min_pairs=50 if first else 100_000,  # later scenarios: only the watch acts
            trainer=copy,
            eval_data=gate,
            canary_steps=(0.5,) if scenario == "trial" else (),
            poll_s=0.1,
        ),
    )


def records(scenario: str) -> list[CaptureRecord]:
    rows = per_label(DATA / "train.jsonl", LABELS, 0, 40)
    out = [captured(e.prompt or "", e.answer, at=1.0) for e in rows]
    if scenario == "rollback":  # v0002 serves and its audits disagree
        answers = ["card_arrival", "exchange_rate", "exchange_rate"] * 20
        out += [
            captured(f"q{i}", "card_arrival", route="audit", student=s, version="v0002", at=2.0)
            for i, s in enumerate(answers)
        ]
    if scenario == "trial":  # v0002 on canary and its audits agree
        out += [
            captured(
                f"q{i}", "card_arrival", route="audit", student="card_arrival", version="v0002",
                at=2.0,
            )
            for i in range(200)
        ]  # fmt: skip
    return out


class History:
    def __init__(self, rows: list[CaptureRecord]) -> None:
        self.rows, self.problems = rows, []

    def records(self, _: Task) -> list[CaptureRecord]:
        return self.rows


async def run(task: Task, rows: list[CaptureRecord]) -> None:
    worker = LoopWorker(task, History(rows), clock=lambda: 10.0)  # type: ignore[arg-type]
    for _ in range(4):  # enough for any scenario to settle
        await worker.step()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("student", type=Path)
    parser.add_argument("scenario", choices=["first-student", "rollback", "trial"])
    parser.add_argument("--kill")
    args = parser.parse_args()
    if args.kill:
        arm(args.kill)
    asyncio.run(run(make_task(args.root, args.student, args.scenario), records(args.scenario)))


if __name__ == "__main__":
    main()
