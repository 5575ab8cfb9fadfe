"""Which confidence of a structured answer ranks and calibrates best: the whole answer's
probability, or its least sure field's, or their mean.

Replays labelled data through a structured task's student (constrained, as serving does),
and scores each record's exactness against three confidences at T = 1: the sequence
probability (every token), the minimum field confidence, the mean field confidence
(``gateway/pipeline/fields.py``). AURC (lower: the ranking puts wrong records last) and
ECE (15 bins) for each, side by side on the same answers.

    python benchmarks/field_confidence.py --task snips [--data data/snips/calibration.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.metrics import aurc_loss, expected_calibration_error  # noqa: E402
from gateway.engines.base import TokenDelta  # noqa: E402
from gateway.engines.transformers import TransformersEngine  # noqa: E402
from gateway.examples import read_examples  # noqa: E402
from gateway.jobs.replay import replay  # noqa: E402
from gateway.pipeline.fields import field_confidences  # noqa: E402
from gateway.tasks import load_tasks  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="snips")
    p.add_argument("--tasks-dir", type=Path, default=ROOT / "tasks")
    p.add_argument("--data", type=Path)
    args = p.parse_args()
    task = load_tasks(args.tasks_dir)[args.task]
    check = task.answer_check
    examples = read_examples(args.data or task.routing.calibration_data or "")

    async def run() -> tuple[list[list[TokenDelta]], list[str]]:
        engine = TransformersEngine(task.student, max_batch_size=64, max_waiting=len(examples))
        await engine.start()
        try:
            answers = await replay(
                engine,
                examples,
                max_tokens=task.generation.max_tokens,
                prompt=task.prompt,
                json_schema=check.schema_json,
            )
        finally:
            await engine.aclose()
        spelled = []
        for a in answers:  # each token's text, exactly: the growth of the decoded prefix
            texts, before = [], ""
            for i in range(len(a.token_ids)):
                now = engine.tokenizer.decode(list(a.token_ids[: i + 1]), skip_special_tokens=True)
                texts.append(now[len(before) :])
                before = now
            spelled.append(
                [
                    TokenDelta(t, s, lp)
                    for t, s, lp in zip(a.token_ids, texts, a.logprobs, strict=True)
                ]
            )
        return spelled, [a.text for a in answers]

    deltas, texts = asyncio.run(run())
    right = np.array(
        [check.same(t, e.answer) for t, e in zip(texts, examples, strict=True)], dtype=float
    )
    fields = [field_confidences(d) for d in deltas]
    scores = {
        "sequence probability": [math.exp(sum(x.logprob for x in d)) for d in deltas],
        "least sure field": [min(f.values()) if f else 0.0 for f in fields],
        "mean field": [float(np.mean(list(f.values()))) if f else 0.0 for f in fields],
    }
    print(f"{task.name}: {len(examples)} records, exact match {right.mean():.3f}\n")
    print("| confidence | AURC | ECE |\n| --- | --- | --- |")
    for name, values in scores.items():
        conf = np.array(values)
        aurc, ece = aurc_loss(right, conf), expected_calibration_error(right, conf)
        print(f"| {name} | {aurc:.4f} | {ece:.4f} |")


if __name__ == "__main__":
    main()
