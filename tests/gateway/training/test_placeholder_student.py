"""A real student trained with placeholders copies a name it never saw, through every way
a student is opened (the job engines and calibration's scoring)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.cli import main as cli_main
from gateway.engines.factory import replay_engine
from gateway.engines.placeholders import PlaceholderEngine, read_placeholders
from gateway.examples import Example, write_examples
from gateway.jobs.calibrate import score_set
from gateway.jobs.replay import replay
from gateway.tasks import PromptFormat

NAMES = ["Ada Fern", "Bo Quill", "Cy Moss", "Di Reed", "Eve Lark", "Fa Dune", "Gil Pond"]
KINDS = {"pub": "is a pub", "coffee shop": "is a coffee shop"}


def pairs(names: list[str]) -> list[Example]:
    return [
        Example(f"{name} {said}.", prompt=f"name[{name}], eatType[{kind}]")
        for name in names
        for kind, said in KINDS.items()
    ]


def test_a_student_trained_with_placeholders_copies_a_name_it_never_saw(tmp_path: Path) -> None:
    write_examples(tmp_path / "train.jsonl", pairs(NAMES) * 8)
    write_examples(tmp_path / "held.jsonl", pairs(NAMES[:2]))
    out = tmp_path / "student"
    cli_main(
        ["student", "train", "--data", str(tmp_path / "train.jsonl"),
         "--held-out", str(tmp_path / "held.jsonl"), "--out", str(out),
         "--max-steps", "60", "--time-budget", "300", "--threads", "2",
         "--placeholder", r"X-NAME=name\[([^\]]+)\]"]
    )  # fmt: skip
    assert json.loads((out / "placeholders.json").read_text()) == {"X-NAME": r"name\[([^\]]+)\]"}
    unseen = pairs(["Zed Quarry", "The Old Anchor"])

    async def run() -> list[str]:
        engine = replay_engine(None)(out, 8)
        assert isinstance(engine, PlaceholderEngine)
        await engine.start()
        try:
            answers = await replay(engine, unseen, max_tokens=16, prompt=PromptFormat())
        finally:
            await engine.aclose()
        return [a.text for a in answers]

    assert asyncio.run(run()) == [e.answer for e in unseen]
    # Calibration scores the ids the student reads and writes: its own answers and the
    # references are the same tokens.
    scored = asyncio.run(score_set(out, unseen, max_tokens=16, prompt=PromptFormat()))
    assert [s.targets.tolist() for s in scored.references] == [
        s.targets.tolist() for s in scored.greedy
    ]
    # Training on from it keeps them, unless told otherwise.
    again = tmp_path / "again"
    cli_main(
        ["student", "train", "--data", str(tmp_path / "train.jsonl"), "--init-from", str(out),
         "--held-out", str(tmp_path / "held.jsonl"), "--out", str(again),
         "--max-steps", "2", "--time-budget", "60", "--threads", "2"]
    )  # fmt: skip
    assert read_placeholders(again) == read_placeholders(out)
