"""A team's own trainer, as the loop's ``trainer`` command template runs it: the tiny test
shape, so the loop's tests train real students in seconds. Not a test module.

    python tests/loop_trainer.py --train T --held-out H --out DIR --answers A [--parent DIR]
        [--epochs N]

``--epochs``: as many steps as N passes over the training pairs (at most 500), as a team's
trainer sized by its data does; without it, the tiny shape's fixed 250 steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.examples import read_examples
from gateway.training.trainer import train_student
from tests.conftest import TINY


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("--train", "--held-out", "--out", "--answers"):
        p.add_argument(name, type=Path, required=True)
    p.add_argument("--parent", default="")
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--fail", action="store_true", help="exit 3 at once (a crashing trainer)")
    args = p.parse_args()
    if args.fail:
        sys.exit(3)
    answers = json.loads(args.answers.read_text())
    train = read_examples(args.train)
    config = TINY
    if args.epochs:
        steps = args.epochs * math.ceil(len(train) / TINY.batch_size)
        config = dataclasses.replace(TINY, max_steps=max(50, min(500, steps)))
    train_student(
        train,
        read_examples(args.held_out),
        args.out,
        config,
        init_from=args.parent or None,
        answers=answers,
    )


if __name__ == "__main__":
    main()
