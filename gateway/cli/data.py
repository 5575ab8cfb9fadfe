"""``distillgate data import-csv|split``: labelled data into the JSONL format, and apart."""

from __future__ import annotations

import argparse

from gateway.settings import Settings

__all__ = ["import_csv", "split"]


def import_csv(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.training.examples import examples_from_csv, write_examples

    n = write_examples(
        args.out,
        examples_from_csv(
            args.csv, prompt_column=args.prompt_column, answer_column=args.answer_column
        ),
    )
    print(f"wrote {n} examples to {args.out}")


def split(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.training.examples import read_examples, stratified_split, write_examples

    kept, held = stratified_split(read_examples(args.data), fraction=args.fraction, seed=args.seed)
    write_examples(args.out_kept, kept)
    write_examples(args.out_split, held)
    print(f"kept {len(kept)} -> {args.out_kept}; split {len(held)} -> {args.out_split}")
