"""The E2E NLG data (cleaned) as free-text prompt -> answer pairs.

A CSV row is a meaning representation (``mr``, 3-8 attributes of a restaurant) and one human
reference text (``ref``); an MR has several. For training, each reference is a pair of its
own (the student sees every way of saying it); for calibration and test, each MR is one
example whose ``references`` are all of its texts (BLEU and chrF score against them all).

The cleaning re-annotated each MR to match its text by a slot matcher, and marks the rows it
changed (``fixed``). Where it kept the MR the text was written from, two annotations agree
(the writer's input and the matcher): the row is *confirmed*. Where it changed it, the
matcher alone speaks, and it misreads some phrasings ("prices lower than £20", "the £20 -
£25 price range" read as no price at all), so the cleaned MR of about one such text in four
leaves out what the text says (docs/benchmarks.md).

Data: Dušek, Howcroft and Rieser 2019 ("Semantic Noise Matters for Neural Natural Language
Generation"), cleaned from Novikova, Dušek and Rieser 2017; CC BY-SA 4.0.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

from gateway.examples import Example

__all__ = ["E2ERow", "by_input", "read_e2e"]


class E2ERow(NamedTuple):
    mr: str
    ref: str
    confirmed: bool  # the cleaning kept the MR the text was written from (``fixed`` = 0)


def read_e2e(path: Path) -> list[E2ERow]:
    """The rows in the file's order. A file without the ``fixed`` column has every row
    confirmed: nothing says otherwise."""
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
            rows.append(E2ERow(mr, ref, (row.get("fixed") or "0").strip() == "0"))
    return rows


def by_input(rows: list[E2ERow]) -> list[Example]:
    """One example per MR, in first-seen order: its confirmed texts its references, and the
    first of them its answer (its first text, where none is confirmed)."""
    texts: dict[str, list[E2ERow]] = {}
    for row in rows:
        texts.setdefault(row.mr, []).append(row)
    examples = []
    for mr, group in texts.items():
        confirmed = tuple(r.ref for r in group if r.confirmed)
        answer = confirmed[0] if confirmed else group[0].ref
        examples.append(Example(answer=answer, prompt=mr, references=confirmed))
    return examples
