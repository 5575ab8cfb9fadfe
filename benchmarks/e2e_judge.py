"""The E2E program judge checked before it checks a student: does it accept the human
references of the E2E test part for their own inputs, and reject them for another input's?

For each human text of ``data/e2e/test.jsonl`` (every reference of every input): the
judge's verdict on (its own input, the text), and on (another input drawn at random, seeded,
the text). Prints both rates, what the rejected own-input texts missed or added, and a
sample of them to read. With ``--csv`` (the cleaned release's ``test.csv``), the same on
every row by what the cleaning did to its MR: kept as the text was written from (confirmed),
or changed; a changed row also against the MR it was written from (``orig_mr``).

    python -m benchmarks.e2e_judge [--data data/e2e/test.jsonl] [--show 20] [--seed 0]
    python -m benchmarks.e2e_judge --csv ../shared/data/e2e/test.csv
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from pathlib import Path

from gateway.examples import read_examples
from gateway.judges.e2e import judge

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "e2e" / "test.jsonl")
    parser.add_argument("--show", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, help="a cleaned E2E CSV: rates by provenance")
    args = parser.parse_args()
    if args.csv:
        by_provenance(args.csv)
        return
    examples = read_examples(args.data)
    pairs = [(e.prompt or "", text) for e in examples for text in e.references]
    rng = random.Random(args.seed)
    inputs = [e.prompt or "" for e in examples]
    accepted, rejected_other = 0, 0
    faults: Counter[str] = Counter()
    refused = []
    for mr, text in pairs:
        own = judge(mr, text)
        if own.acceptable:
            accepted += 1
        else:
            refused.append((mr, text, own.reason))
            for part in own.reason.replace(";", ",").split(","):
                kind = part.strip().removeprefix("missing ").removeprefix("added ")
                faults[("missing " if "missing" in part else "added ") + kind.split("[")[0]] += 1
        other = mr
        while other == mr:
            other = rng.choice(inputs)
        rejected_other += not judge(other, text).acceptable
    n = len(pairs)
    print(f"{args.data}: {len(examples)} inputs, {n} human texts")
    print(f"accepted for their own input: {accepted}/{n} = {accepted / n:.4f}")
    print(f"rejected for another input:   {rejected_other}/{n} = {rejected_other / n:.4f}")
    print(
        "what the rejected ones missed or added:",
        ", ".join(f"{k} {v}" for k, v in faults.most_common()),
    )
    rng.shuffle(refused)
    for mr, text, reason in refused[: args.show]:
        print(f"\n  {mr}\n  {text}\n  -> {reason}")


def by_provenance(path: Path) -> None:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    counts: Counter[tuple[str, bool, bool]] = Counter()
    for row in rows:
        cleaned = judge(row["mr"], row["ref"]).acceptable
        original = judge(row["orig_mr"], row["ref"]).acceptable
        counts[row["fixed"].strip(), cleaned, original] += 1
    n_kept = sum(v for (fixed, _, _), v in counts.items() if fixed == "0")
    ok_kept = sum(v for (fixed, ok, _), v in counts.items() if fixed == "0" and ok)
    n_changed = len(rows) - n_kept
    ok_changed = sum(v for (fixed, ok, _), v in counts.items() if fixed != "0" and ok)
    rescued = sum(v for (fixed, ok, orig), v in counts.items() if fixed != "0" and orig and not ok)
    print(f"{path}: {len(rows)} texts")
    print(f"MR confirmed by the cleaning: {ok_kept}/{n_kept} = {ok_kept / n_kept:.4f} accepted")
    print(
        f"MR changed by the cleaning:   {ok_changed}/{n_changed} = "
        f"{ok_changed / n_changed:.4f} accepted; of the {n_changed - ok_changed} rejected, "
        f"{rescued} are accepted for the MR the text was written from"
    )


if __name__ == "__main__":
    main()
