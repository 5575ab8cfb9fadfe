"""A round's data from everything captured so far: gated, voted, split three ways.

Every prompt lands in the same part on every round and machine (a hash of the prompt), so
the evaluation part is frozen: no student is ever trained or calibrated on it.

    captured holdout (``capture.holdout_share`` of prompts) ─┬─ evaluate (``eval_share``)
                                                             └─ calibrate
    the rest ─────────────────────────────────────────────────── train

Quality gates: export's (``jobs/export.drop_reason``: teacher errors, empty or cut answers,
answers outside the answer set), and one more the loop needs because it reads the whole
history: the same prompt captured with different teacher answers is decided by a strict
majority of them, or dropped when there is none. A free-text task's (judged) texts do not
vote: each wording is an answer, so each is a training pair of its own, and a held-out
prompt is one example with every wording as its references.

Each part comes in a fixed pseudo-random order of its prompts (a hash), not in the order
they were captured: concurrent requests land in the stream in any order, and a round must
train the same student from the same pairs however they arrived.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.capture.base import CaptureRecord
from gateway.examples import Example
from gateway.jobs.export import drop_reason, is_held_out, normalise_prompt, to_example
from gateway.tasks import Task

__all__ = ["RoundData", "round_data", "with_labelled"]


@dataclass
class RoundData:
    train: list[Example] = field(default_factory=list)
    calibrate: list[Example] = field(default_factory=list)
    evaluate: list[Example] = field(default_factory=list)
    records: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    last_captured_at: float = 0.0

    @property
    def pairs(self) -> int:
        return len(self.train) + len(self.calibrate) + len(self.evaluate)

    @property
    def answers(self) -> set[str]:
        return {e.answer for part in (self.train, self.calibrate, self.evaluate) for e in part}

    def summary(self) -> dict[str, object]:
        return {
            "records": self.records,
            "pairs": self.pairs,
            "train": len(self.train),
            "calibrate": len(self.calibrate),
            "evaluate": len(self.evaluate),
            "distinct_answers": len(self.answers),
            "dropped": dict(self.dropped),
            "last_captured_at": self.last_captured_at,
        }


def round_data(records: Iterable[CaptureRecord], task: Task, *, eval_share: float) -> RoundData:
    data = RoundData()
    votes: dict[str, Counter[str]] = {}
    first: dict[str, Example] = {}
    spelled: dict[str, str] = {}  # an answer's key -> its first spelling
    same = task.answer_check.key  # a structured answer votes by its JSON value
    for record in records:
        data.records += 1
        data.last_captured_at = max(data.last_captured_at, record.captured_at)
        reason = drop_reason(record, task)
        if reason is not None:
            data.dropped[reason] += 1
            continue
        example = to_example(record, task)
        key = normalise_prompt(example.chat()[-1]["content"])
        votes.setdefault(key, Counter())[same(example.answer)] += 1
        spelled.setdefault(same(example.answer), example.answer)
        first.setdefault(key, example)
    for key in sorted(votes, key=_fixed_order):
        counted = votes[key]
        example = first[key]
        held = is_held_out(key, task.capture.holdout_share)
        if task.judge is not None:  # free text: every wording, most captured first
            texts = [spelled[t] for t in sorted(counted, key=lambda t: (-counted[t], t))]
            data.dropped["duplicate prompt"] += sum(counted.values()) - len(texts)
            if not held:
                data.train += [_answered(example, text) for text in texts]
                continue
            example = _answered(example, texts[0], references=tuple(texts))
        else:
            top, n = counted.most_common(1)[0]
            total = sum(counted.values())
            if len(counted) > 1:
                if n * 2 <= total:
                    data.dropped["teacher answers disagree, no majority"] += total
                    continue
                data.dropped["outvoted teacher answer"] += total - n
            data.dropped["duplicate prompt"] += n - 1
            if same(example.answer) != top:
                example = _answered(example, spelled[top])
        if not held:
            data.train.append(example)
        elif is_held_out("evaluate:" + key, eval_share):
            data.evaluate.append(example)
        else:
            data.calibrate.append(example)
    return data


def _answered(example: Example, answer: str, references: tuple[str, ...] = ()) -> Example:
    return Example(
        answer=answer, prompt=example.prompt, messages=example.messages, references=references
    )


def _fixed_order(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def with_labelled(
    data: RoundData,
    *,
    train: Sequence[Example],
    calibrate: Sequence[Example],
    evaluate: Sequence[Example],
) -> tuple[list[Example], list[Example], list[Example]]:
    """The round's three sets: captured pairs joined by the task's labelled files.

    A labelled prompt keeps its file's role when live traffic asks it too (a team sends its
    test set through the gateway): an evaluation prompt is never trained or calibrated on,
    a calibration prompt never trained on."""
    gated, calibrating = _prompts(evaluate), _prompts(calibrate)
    return (
        [*(e for e in data.train if _key(e) not in gated | calibrating), *train],
        [*(e for e in data.calibrate if _key(e) not in gated), *calibrate],
        [*(e for e in data.evaluate if _key(e) not in gated), *evaluate],
    )


def _key(example: Example) -> str:
    return normalise_prompt(example.chat()[-1]["content"])


def _prompts(examples: Iterable[Example]) -> set[str]:
    return {_key(e) for e in examples}
