from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.capture import Redactor
from gateway.capture.redaction import luhn_valid

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to jane.doe@example.co.uk today", "write to [EMAIL] today", "EMAIL"),
        ("my card 4111 1111 1111 1111 got declined", "my card [CARD] got declined", "CARD"),
        ("card 5500-0000-0000-0004 please", "card [CARD] please", "CARD"),
        ("IBAN GB82 WEST 1234 5698 7654 32 thanks", "IBAN [IBAN] thanks", "IBAN"),
        ("call +44 20 7946 0958 now", "call [PHONE] now", "PHONE"),
        ("ring (555) 123-4567", "ring [PHONE]", "PHONE"),
        ("account 12345678 frozen", "account [ACCOUNT] frozen", "ACCOUNT"),
    ],
)
def test_builtin_patterns(text: str, expected: str, kind: str) -> None:
    assert Redactor.with_builtins().redact(text) == (expected, {kind})


@pytest.mark.parametrize(
    "text",
    [
        "I paid 1000 dollars in 2020",
        "transfer of 250.00 on 12/03/2021",
        "top up 50 euro",
        "pin 1234",
    ],
)
def test_amounts_dates_and_short_numbers_are_kept(text: str) -> None:
    assert Redactor.with_builtins().redact(text) == (text, set())


def test_user_patterns_are_added() -> None:
    redactor = Redactor.with_builtins({"order_id": r"ORD-\d+"})
    assert redactor.redact("where is ORD-5512?") == ("where is [ORDER_ID]?", {"ORDER_ID"})


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


def test_banking77_prompts_have_no_false_positives() -> None:
    redactor = Redactor.with_builtins()
    prompts = [
        json.loads(line)["prompt"]
        for line in (ROOT / "data" / "banking77" / "test.jsonl").read_text().splitlines()
    ]
    touched = [p for p in prompts if redactor.redact(p)[1]]
    assert touched == []
