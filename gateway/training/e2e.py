"""The E2E NLG data (cleaned) as free-text prompt -> answer pairs.

A CSV row is a meaning representation (``mr``, 3-8 attributes of a restaurant) and one human
reference text (``ref``); an MR has several. For training, each reference is a pair of its
own (the student sees every way of saying it); for calibration and test, each MR is one
example whose ``references`` are all of its texts (BLEU and chrF score against them all).

Data: Dušek, Howcroft and Rieser 2019 ("Semantic Noise Matters for Neural Natural Language
Generation"), cleaned from Novikova, Dušek and Rieser 2017; CC BY-SA 4.0.
"""

from __future__ import annotations

import csv
from pathlib import Path

from gateway.examples import Example

__all__ = ["by_input", "read_e2e"]


def read_e2e(path: Path) -> list[tuple[str, str]]:
    """(mr, reference) rows, in the file's order."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"mr", "ref"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            mr, ref = row["mr"].strip(), " ".join(row["ref"].split())
            if not mr or not ref:
                raise ValueError(f"{path}:{lineno}: empty 'mr' or 'ref'")
            rows.append((mr, ref))
    return rows


def by_input(rows: list[tuple[str, str]]) -> list[Example]:
    """One example per MR, in first-seen order: the first text its answer, all its
    references."""
    texts: dict[str, list[str]] = {}
    for mr, ref in rows:
        texts.setdefault(mr, []).append(ref)
    return [
        Example(answer=refs[0], prompt=mr, references=tuple(refs)) for mr, refs in texts.items()
    ]
