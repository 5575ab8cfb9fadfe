"""The E2E NLG data (cleaned) as free-text prompt -> answer pairs.

A CSV row is a meaning representation (``mr``, 3-8 attributes of a restaurant) and one human
reference text (``ref``); an MR has several. For training, each reference is a pair of its
own (the student sees every way of saying it); for calibration and test, each MR is one
example whose ``references`` are all of its texts (BLEU and chrF score against them all).

A from-scratch student meets few venue names (17 in the development set, half of the test
set's unseen) and learns to write the ones it knows instead of copying the input's:
``with_new_names`` adds copies of the training pairs with ``name`` and ``near`` replaced, in
the MR and the text alike, by names made up from a word list, so what it learns is to copy.

Data: Dušek, Howcroft and Rieser 2019 ("Semantic Noise Matters for Neural Natural Language
Generation"), cleaned from Novikova, Dušek and Rieser 2017; CC BY-SA 4.0.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

from gateway.examples import Example

__all__ = ["by_input", "read_e2e", "with_new_names"]

# Made-up venue names are drawn from these (none is a word of an E2E venue).
_FIRST = (
    "Amber", "Copper", "Silver", "Old", "Red", "Little", "Golden", "Hidden", "Velvet",
    "Lantern", "Harbour", "Maple", "Juniper", "Saffron", "Olive", "Crimson", "Stone", "Willow",
)  # fmt: skip
_SECOND = (
    "Oak", "Heron", "Anchor", "Kettle", "Fox", "Barrel", "Lantern", "Orchard", "Crown",
    "Table", "Garden", "Bridge", "Harp", "Wheel", "Thistle", "Spoon", "Lamb", "Feather",
)  # fmt: skip


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


def with_new_names(
    rows: list[tuple[str, str]], copies: int, seed: int = 0
) -> list[tuple[str, str]]:
    """``rows`` and, for each, ``copies`` more with its ``name`` and ``near`` made up (where
    the text writes them as the MR does; a row whose text does not is kept only once)."""
    rng = random.Random(seed)
    out = list(rows)
    for mr, ref in rows:
        venues = re.findall(r"(?:name|near)\[([^\]]+)\]", mr)
        if not venues or not all(v in ref for v in venues):
            continue
        for _ in range(copies):
            names = _made_up(rng, len(venues))
            new_mr, new_ref = mr, ref
            for venue, name in zip(venues, names, strict=True):
                new_mr = new_mr.replace(f"[{venue}]", f"[{name}]")
                new_ref = new_ref.replace(venue, name)
            out.append((new_mr, new_ref))
    return out


def _made_up(rng: random.Random, n: int) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = f"{rng.choice(_FIRST)} {rng.choice(_SECOND)}"
        if rng.random() < 0.3:
            name = "The " + name
        if name not in names and name.split()[-1] != name.split()[-2]:
            names.append(name)
    return names
