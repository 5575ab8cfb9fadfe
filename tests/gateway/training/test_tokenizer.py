from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.examples import read_examples
from gateway.training.tokenizer import build_tokenizer, check_round_trip
from gateway.training.trainer import _prompt_ids, encode

DATA = Path(__file__).resolve().parents[3] / "data" / "banking77"


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    train = read_examples(DATA / "train.jsonl")
    return build_tokenizer(
        [e.prompt or "" for e in train[:3000]], [e.answer for e in train], vocab_size=1200
    )


def test_every_label_round_trips_despite_lowercasing(tokenizer) -> None:  # type: ignore[no-untyped-def]
    labels = json.loads((DATA / "categories.json").read_text())
    assert "Refund_not_showing_up" in labels
    for label in labels:
        assert tokenizer.decode(tokenizer.encode(label, add_special_tokens=False)) == label
    assert (
        tokenizer("Where IS my Card", add_special_tokens=False)["input_ids"]
        == tokenizer("where is my card", add_special_tokens=False)["input_ids"]
    )


def test_training_encoding_equals_the_chat_template(tokenizer) -> None:  # type: ignore[no-untyped-def]
    examples = read_examples(DATA / "test.jsonl")[:50]
    for ex, enc in zip(examples, encode(examples, tokenizer), strict=True):
        text_ids = tokenizer(enc.text, add_special_tokens=False)["input_ids"]
        served = tokenizer.apply_chat_template(
            ex.chat(), add_generation_prompt=True, tokenize=True, return_dict=False
        )
        assert _prompt_ids(tokenizer, enc.prefix, text_ids, 10_000) == list(served)


def test_an_answer_that_cannot_round_trip_is_refused(tokenizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="--no-lowercase"):
        check_round_trip(tokenizer, ["Hello World"])


def test_auto_case_keeps_free_text_and_lowercases_labels() -> None:
    texts = [f"what is the name number {i}" for i in range(60)]
    free = [f"Name {chr(65 + i % 26)}{i}" for i in range(60)]  # distinct, capitalised: free text
    free[0] = '{"album":"Regulate…g Funk Era","w":"\uff57 \ufb01"}'  # NFKC rewrites all three
    tok = build_tokenizer(texts, free, vocab_size=400)
    assert all(tok.decode(tok.encode(a, add_special_tokens=False)) == a for a in free)
    assert len(tok) < 420  # no answer was added whole
    labels = ["Yes", "No"] * 30  # a closed set: lower-cased, labels added whole
    tok = build_tokenizer(texts, labels, vocab_size=400)
    assert (
        tok("HELLO", add_special_tokens=False)["input_ids"]
        == tok("hello", add_special_tokens=False)["input_ids"]
    )
    assert tok.decode(tok.encode("Yes", add_special_tokens=False)) == "Yes"
