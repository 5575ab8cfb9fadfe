"""``distillgate data import-snips``: SNIPS queries to structured pairs, split and schema."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.answers import AnswerCheck
from gateway.examples import read_examples
from tests.conftest import cli

WEATHER = {
    "GetWeather": [
        {
            "data": [
                {"text": "What will the weather be "},
                {"text": "this  year", "entity": "timeRange"},
                {"text": " in "},
                {"text": "Paris", "entity": "city"},
                {"text": "?"},
            ]
        },
        {  # names a slot twice: left out
            "data": [
                {"text": "weather in "},
                {"text": "Paris", "entity": "city"},
                {"text": " and "},
                {"text": "Rome", "entity": "city"},
            ]
        },
        *({"data": [{"text": f"is it sunny in town {i}"}]} for i in range(200)),
    ]
}
# A playlist with an emoji written as a UTF-8-encoded surrogate pair, as the source has one.
MUSIC = (
    b'{"PlayMusic": [{"data": [{"text": "play "}, '
    b'{"text": "Pop Punk Perfection \xed\xa0\xbc\xed\xbd\x95", "entity": "playlist"}]}]}'
)


def test_import_snips_writes_pairs_a_schema_and_held_out_files(tmp_path: Path) -> None:
    src = tmp_path / "snips"
    src.mkdir()
    (src / "train_GetWeather_full.json").write_text(json.dumps(WEATHER))
    (src / "train_PlayMusic_full.json").write_bytes(MUSIC)
    (src / "README.md").write_text("not a data file")
    out = tmp_path / "out"
    done = cli(
        "data", "import-snips", str(src), "--out", str(out / "train.jsonl.gz"),
        "--calibration-out", str(out / "calibration.jsonl"), "--test-out",
        str(out / "test.jsonl"), "--schema-out", str(out / "schema.json"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "left out 1 queries that name a slot twice" in done.stdout
    names = {"train": "train.jsonl.gz", "calibration": "calibration.jsonl", "test": "test.jsonl"}
    parts = {n: read_examples(out / f) for n, f in names.items()}
    every = [e for part in parts.values() for e in part]
    assert len(every) == 202  # 203 queries, one left out
    assert 5 < len(parts["test"]) < 45 and 5 < len(parts["calibration"]) < 45
    by_prompt = {e.prompt: e.answer for e in every}
    weather = by_prompt["What will the weather be this year in Paris?"]
    assert weather == '{"intent":"GetWeather","slots":{"city":"Paris","timeRange":"this year"}}'
    assert json.loads(by_prompt["play Pop Punk Perfection 🍕"]) == {
        "intent": "PlayMusic",
        "slots": {"playlist": "Pop Punk Perfection 🍕"},
    }
    assert json.loads(by_prompt["is it sunny in town 7"])["slots"] == {}

    check = AnswerCheck(schema=json.loads((out / "schema.json").read_text()))
    assert all(check.valid(e.answer) for e in every)
    assert not check.valid('{"intent":"GetWeather","slots":{"playlist":"x"}}')  # another intent's
    assert not check.valid('{"intent":"GetWeather","slots":{"city":3}}')

    again = tmp_path / "again"
    cli(
        "data", "import-snips", str(src), "--out", str(again / "train.jsonl.gz"),
        "--calibration-out", str(again / "calibration.jsonl"), "--test-out",
        str(again / "test.jsonl"), cwd=tmp_path,
    )  # fmt: skip
    for name in names.values():  # a hash of the query splits: the same bytes on every run
        assert (again / name).read_bytes() == (out / name).read_bytes()
