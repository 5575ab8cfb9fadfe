"""``Redactor``: personal data out of captured records, before they leave the gateway.

Only the captured copy is redacted; the teacher still sees the client's words (it has to
answer them). Built-in patterns, applied in this order so the specific ones win:

- ``EMAIL``   name@example.com
- ``CARD``    13-19 digits, spaces or dashes allowed, that pass the Luhn check
- ``IBAN``    two letters, two check digits, 11-30 more characters
- ``PHONE``   an optional +country code and 9-15 digits in groups, as people write them
- ``ACCOUNT`` any other run of 8 or more digits (account and sort-code-like numbers)

Task files add their own as ``NAME = "regex"``; matches become ``[NAME]``. Patterns are
conservative: a four-digit amount or a year is never touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["BUILTIN_PATTERNS", "Redactor", "luhn_valid"]


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group())
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _phone(match: re.Match[str]) -> bool:
    return 9 <= len(re.sub(r"\D", "", match.group())) <= 15


BUILTIN_PATTERNS: dict[str, str] = {
    "EMAIL": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "CARD": r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])",
    "IBAN": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
    "PHONE": (
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?"
        r"\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)"
    ),
    "ACCOUNT": r"(?<!\d)\d{8,}(?!\d)",
}
_CHECKS: dict[str, Callable[[re.Match[str]], bool]] = {"CARD": _card, "PHONE": _phone}


@dataclass(frozen=True)
class Redactor:
    patterns: tuple[tuple[str, re.Pattern[str]], ...]

    @classmethod
    def with_builtins(cls, extra: Mapping[str, str] | None = None) -> Redactor:
        """The built-in patterns, then the task's own (names upper-cased)."""
        named = {**BUILTIN_PATTERNS, **{k.upper(): v for k, v in (extra or {}).items()}}
        return cls(tuple((name, re.compile(rx)) for name, rx in named.items()))

    def redact(self, text: str) -> tuple[str, set[str]]:
        """``text`` with each match replaced by ``[NAME]``, and the names that matched."""
        found: set[str] = set()
        for name, pattern in self.patterns:
            check = _CHECKS.get(name)

            def replace(m: re.Match[str], name: str = name, check: object = check) -> str:
                if callable(check) and not check(m):
                    return m.group()
                found.add(name)
                return f"[{name}]"

            text = pattern.sub(replace, text)
        return text, found
