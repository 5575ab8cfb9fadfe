"""Labelled examples: the one data format every offline command reads.

A JSONL file, one object a line: ``{"prompt": "...", "answer": "..."}``, where a
``messages`` list (OpenAI chat shape, without the final assistant turn) may replace
``prompt``. A free-text task's examples may list every acceptable human text in
``references`` (``answer`` is one of them), for BLEU and chrF. Bad lines raise
``ValueError`` naming the file and line, so a broken dataset fails before minutes of
training are spent on it.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["Example", "examples_from_csv", "read_examples", "stratified_split", "write_examples"]


@dataclass(frozen=True)
class Example:
    """One prompt → answer pair; ``messages`` is set when the prompt is a conversation."""

    answer: str
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] = field(default=())
    references: tuple[str, ...] = field(default=())

    def chat(self) -> list[dict[str, str]]:
        """The conversation the student sees, ending on the user's turn."""
        if self.messages:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any]
        if self.messages:
            out = {"messages": [dict(m) for m in self.messages], "answer": self.answer}
        else:
            out = {"prompt": self.prompt, "answer": self.answer}
        if self.references:
            out["references"] = list(self.references)
        return out


def _parse_line(obj: Any, where: str) -> Example:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    answer = obj.get("answer")
    if not isinstance(answer, str) or not answer:
        raise ValueError(f"{where}: 'answer' must be a non-empty string")
    references = obj.get("references", [])
    if not (isinstance(references, list) and all(isinstance(r, str) and r for r in references)):
        raise ValueError(f"{where}: 'references' must be a list of non-empty strings")
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where}: 'messages' must be a non-empty list")
        for m in messages:
            if not (
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
            ):
                raise ValueError(f"{where}: each message needs string 'role' and 'content'")
        clean = tuple({"role": m["role"], "content": m["content"]} for m in messages)
        return Example(answer=answer, messages=clean, references=tuple(references))
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"{where}: needs a non-empty string 'prompt' or a 'messages' list")
    return Example(answer=answer, prompt=prompt, references=tuple(references))


@contextlib.contextmanager
def _open_text(path: Path, mode: str) -> Iterator[IO[str]]:
    """A JSONL file, gzip-compressed when its name ends in ``.gz`` (written with no time
    or name in the header, so the same examples give the same bytes)."""
    if path.suffix != ".gz":
        with path.open(mode, encoding="utf-8") as f:
            yield f
        return
    with (
        path.open(mode + "b") as raw,
        gzip.GzipFile(filename="", mode=mode + "b", fileobj=raw, mtime=0) as packed,
        io.TextIOWrapper(packed, encoding="utf-8") as text,
    ):
        yield text


def read_examples(path: str | Path) -> list[Example]:
    """Read a labelled JSONL file (``.jsonl.gz`` too); raise ``ValueError`` on the first bad
    line."""
    path = Path(path)
    examples = []
    with _open_text(path, "r") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
            examples.append(_parse_line(obj, where))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def write_examples(path: str | Path, examples: Iterable[Example]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with _open_text(path, "w") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def examples_from_csv(
    path: str | Path, *, prompt_column: str = "text", answer_column: str = "category"
) -> list[Example]:
    """Import a two-column CSV (Banking77's ``text,category``) as examples."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {prompt_column, answer_column} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        examples = []
        for lineno, row in enumerate(reader, start=2):
            prompt, answer = row[prompt_column].strip(), row[answer_column].strip()
            if not prompt or not answer:
                raise ValueError(f"{path}:{lineno}: empty {prompt_column!r} or {answer_column!r}")
            examples.append(Example(answer=answer, prompt=prompt))
    return examples


def stratified_split(
    examples: Sequence[Example], *, fraction: float, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Split off ``fraction`` of each answer's examples (at least one where it has two)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    by_answer: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_answer[ex.answer].append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for idx in by_answer.values():
        rng.shuffle(idx)
        k = round(len(idx) * fraction)
        if len(idx) >= 2:
            k = max(1, min(k, len(idx) - 1))
        held.update(idx[:k])
    kept = [ex for i, ex in enumerate(examples) if i not in held]
    split = [ex for i, ex in enumerate(examples) if i in held]
    return kept, split
