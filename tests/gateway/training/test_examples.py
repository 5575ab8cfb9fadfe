from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gateway.examples import (
    Example,
    examples_from_csv,
    read_examples,
    stratified_split,
    write_examples,
)


def test_jsonl_round_trip_with_prompts_and_messages(tmp_path: Path) -> None:
    examples = [
        Example(answer="a", prompt="hello"),
        Example(
            answer="b",
            messages=({"role": "system", "content": "s"}, {"role": "user", "content": "u"}),
        ),
    ]
    write_examples(tmp_path / "x.jsonl", examples)
    assert read_examples(tmp_path / "x.jsonl") == examples
    assert examples[1].chat()[-1] == {"role": "user", "content": "u"}
    write_examples(tmp_path / "x.jsonl.gz", examples)  # compressed, by the name
    assert read_examples(tmp_path / "x.jsonl.gz") == examples
    assert (tmp_path / "x.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"prompt": "x"}', "'answer'"),
        ('{"answer": "a"}', "'prompt'"),
        ('{"answer": "a", "messages": []}', "'messages'"),
        ('{"answer": "a", "messages": [{"role": "user"}]}', "role"),
        ("[1]", "JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "answer": "a"}\n' + line + "\n")
    with pytest.raises(ValueError, match=problem) as info:
        read_examples(path)
    assert f"{path}:2" in str(info.value)


def test_csv_import_reads_quoted_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,category\n"Hi, there ""you""",greet\nbye,leave\n')
    assert examples_from_csv(path) == [Example("greet", 'Hi, there "you"'), Example("leave", "bye")]
    with pytest.raises(ValueError, match="missing column"):
        examples_from_csv(path, answer_column="label")


def test_stratified_split_keeps_every_answer_on_both_sides() -> None:
    examples = [Example(answer=str(i % 5), prompt=f"p{i}") for i in range(100)]
    kept, held = stratified_split(examples, fraction=0.2, seed=3)
    assert len(kept) + len(held) == 100 and not set(kept) & set(held)
    assert Counter(e.answer for e in held) == {str(i): 4 for i in range(5)}


def test_the_shipped_jsonl_is_what_the_converter_makes(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[3] / "data" / "banking77"
    assert read_examples(data / "test.jsonl") == examples_from_csv(data / "test.csv")
    train = examples_from_csv(data / "train.csv")
    kept, held = stratified_split(train, fraction=0.15, seed=0)
    assert read_examples(data / "train.jsonl") == kept
    assert read_examples(data / "calibration.jsonl") == held
