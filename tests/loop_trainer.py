"""A team's own trainer, as the loop's ``trainer`` command template runs it: the tiny test
shape, so the loop's tests train real students in seconds. Not a test module.

    python tests/loop_trainer.py --train T --held-out H --out DIR --answers A [--parent DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.training.examples import read_examples
from gateway.training.trainer import train_student
from tests.conftest import TINY


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("--train", "--held-out", "--out", "--answers"):
        p.add_argument(name, type=Path, required=True)
    p.add_argument("--parent", default="")
    p.add_argument("--fail", action="store_true", help="exit 3 at once (a crashing trainer)")
    args = p.parse_args()
    if args.fail:
        sys.exit(3)
    answers = json.loads(args.answers.read_text())
    train_student(
        read_examples(args.train),
        read_examples(args.held_out),
        args.out,
        TINY,
        init_from=args.parent or None,
        answers=answers,
    )


if __name__ == "__main__":
    main()
