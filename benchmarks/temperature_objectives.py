"""Two ways to fit the one temperature, side by side on the same student and data.

``TemperatureScaler`` fits T to the reference answers' token NLL (teacher forcing);
``AnswerTemperatureScaler`` (what ``distillgate calibrate`` uses) fits T to whether the
student's own answers were right. Both on the same third of the labelled set; ECE and the
coverage certified at several targets (Learn-then-Test, delta 0.05) on the other two thirds.

    python benchmarks/temperature_objectives.py --student models/banking77 \\
        [--data data/banking77/calibration.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration import (  # noqa: E402
    AnswerTemperatureScaler,
    TemperatureScaler,
    ThresholdSelector,
    expected_calibration_error,
)
from gateway.examples import read_examples  # noqa: E402
from gateway.jobs.calibrate import (  # noqa: E402
    score_set,
    sequence_confidence,
    split_for_calibration,
)
from gateway.tasks import PromptFormat  # noqa: E402

TARGETS = (0.97, 0.95, 0.9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--student", type=Path, required=True)
    p.add_argument("--data", type=Path, default=ROOT / "data/banking77/calibration.jsonl")
    p.add_argument("--max-tokens", type=int, default=24)
    args = p.parse_args()
    examples = read_examples(args.data)
    scored = asyncio.run(
        score_set(args.student, examples, max_tokens=args.max_tokens, prompt=PromptFormat())
    )
    fit_idx, select_idx = split_for_calibration(len(examples), 0)
    fit, select = scored.subset(fit_idx), scored.subset(select_idx)
    token_t = TemperatureScaler().fit(
        np.concatenate([r.logits for r in fit.references]),
        np.concatenate([r.targets for r in fit.references]),
    )
    answer_t = AnswerTemperatureScaler().fit(
        [g.logits for g in fit.greedy], [g.targets for g in fit.greedy], fit.correct
    )
    correct = select.correct
    print(f"{args.student}: accuracy {correct.mean():.3f} on the {len(select_idx)} held out")
    print("| fit | T | ECE | " + " | ".join(f"coverage at {t:.0%}" for t in TARGETS) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in TARGETS) + " |")
    for name, temperature in (
        ("none", 1.0),
        ("reference-token NLL", float(token_t.temperature_)),
        ("answer NLL", float(answer_t.temperature_)),
    ):
        conf = sequence_confidence(select.greedy, temperature)
        cells = []
        for target in TARGETS:
            selector = ThresholdSelector(target_accuracy=target, delta=0.05).fit(conf, correct)
            cells.append(f"{selector.coverage_:.3f}")
        ece = expected_calibration_error(correct, conf)
        print(f"| {name} | {temperature:.2f} | {ece:.4f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
