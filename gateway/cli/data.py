"""``distillgate data import-csv|import-snips|import-e2e|split``: labelled data into JSONL,
and apart."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.examples import Example

__all__ = ["import_csv", "import_e2e", "import_snips", "split"]


def import_csv(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.examples import examples_from_csv, write_examples

    n = write_examples(
        args.out,
        examples_from_csv(
            args.csv, prompt_column=args.prompt_column, answer_column=args.answer_column
        ),
    )
    print(f"wrote {n} examples to {args.out}")


def import_e2e(args: argparse.Namespace, settings: Settings) -> None:
    """Training pairs from train.csv and a share of test.csv's inputs; the rest of test.csv's
    inputs split between calibration and test, all by a hash of the input
    (``export.is_held_out``), so every machine draws the same parts. train.csv (the cleaned
    development set) describes coffee shops almost only (4 of its 4,299 texts a pub): a
    student trained on it alone has never written "pub", which most test inputs are.

    Training keeps, by ``--train-texts``, the texts the E2E program judge accepts for their
    MR (the default), those whose MR the cleaning confirmed (``read_e2e``), or all: a
    student learns no attribute its input lacks. Calibration and test keep every input of
    their part, so the two are drawn alike and the threshold's guarantee carries to the
    test; an input's ``references`` are its confirmed texts (those the judge is checked
    on), and its ``answer`` (what the simulator teacher says) the first of them, or its first
    text where none is confirmed."""
    from gateway.examples import Example, write_examples
    from gateway.jobs.export import is_held_out
    from gateway.judges.e2e import judge
    from gateway.training.e2e import E2ERow, by_input, read_e2e

    def trained_on(row: E2ERow) -> bool:
        if args.train_texts == "accepted":
            return judge(row.mr, row.ref).acceptable
        return row.confirmed or args.train_texts == "all"

    def part(mr: str) -> str:
        if is_held_out("e2e-train:" + mr, args.train_share):
            return "train"
        return "test" if is_held_out("e2e-test:" + mr, args.test_share) else "calibration"

    rows = read_e2e(args.folder / "test.csv")
    train = read_e2e(args.folder / "train.csv") + [r for r in rows if part(r.mr) == "train"]
    train = [r for r in train if trained_on(r)]
    test = by_input([r for r in rows if part(r.mr) == "test"])
    calibration = by_input([r for r in rows if part(r.mr) == "calibration"])
    write_examples(args.out, (Example(answer=r.ref, prompt=r.mr) for r in train))
    write_examples(args.calibration_out, calibration)
    write_examples(args.test_out, test)
    print(
        f"{len(train)} training pairs ({args.train_texts} texts); {len(calibration)} inputs "
        f"to calibrate and {len(test)} to test (with {sum(len(e.references) for e in test)} "
        "confirmed human texts)"
    )


def import_snips(args: argparse.Namespace, settings: Settings) -> None:
    """The held-out files are drawn by a hash of the query (``export.is_held_out``), so the
    same query lands in the same file on every machine; the training file gets the rest."""
    import json

    from gateway.examples import write_examples
    from gateway.jobs.export import is_held_out, normalise_prompt
    from gateway.training.snips import read_snips, snips_schema

    imported = read_snips(args.folder)
    share = args.held_out_share
    parts: dict[str, list[Example]] = {"train": [], "calibration": [], "test": []}
    for example in imported.examples:
        key = normalise_prompt(example.prompt or "")
        if args.test_out and is_held_out("snips-test:" + key, share):
            parts["test"].append(example)
        elif args.calibration_out and is_held_out("snips-calibration:" + key, share / (1 - share)):
            parts["calibration"].append(example)
        else:
            parts["train"].append(example)
    for name, path in (("train", args.out), ("calibration", args.calibration_out)):
        if path is not None:
            write_examples(path, parts[name])
    if args.test_out:
        write_examples(args.test_out, parts["test"])
    if args.schema_out:
        schema = snips_schema(imported.slots_by_intent)
        args.schema_out.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    print(
        f"{len(imported.files)} files, {len(imported.slots_by_intent)} intents: "
        + ", ".join(f"{n} {name}" for name, n in ((k, len(v)) for k, v in parts.items()) if n)
        + f"; left out {imported.skipped_repeated_slot} queries that name a slot twice"
    )


def split(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.examples import read_examples, stratified_split, write_examples

    kept, held = stratified_split(read_examples(args.data), fraction=args.fraction, seed=args.seed)
    write_examples(args.out_kept, kept)
    write_examples(args.out_split, held)
    print(f"kept {len(kept)} -> {args.out_kept}; split {len(held)} -> {args.out_split}")
