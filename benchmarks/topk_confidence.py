"""How far is the top-k renormalised confidence (what vLLM can give, k <= 20) from the
full-softmax one (what the CPU engine computes)?

Runs the demo student over a labelled set once, with each token's full-softmax logprob at
the calibrator's T and its top-20 raw alternatives; compares the sequence confidence from
the full softmax with the one renormalised over the top k, for several k, and counts the
accept/escalate decisions that would change at the calibrated threshold.

    python benchmarks/topk_confidence.py [--data data/banking77/test.jsonl]
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

from calibration import load_calibration, renormalized_logprob  # noqa: E402
from gateway.engines.base import GenerationRequest, Message, SamplingParams, TokenDelta  # noqa: E402
from gateway.engines.transformers import TransformersEngine  # noqa: E402
from gateway.examples import read_examples  # noqa: E402
from gateway.tasks import load_tasks  # noqa: E402


async def run(data: Path) -> None:
    task = load_tasks(ROOT / "tasks")["banking77"]
    assert task.calibrator is not None
    cal = load_calibration(task.calibrator, student_dir=task.student)
    examples = read_examples(data)
    engine = TransformersEngine(task.student, max_batch_size=64, max_waiting=len(examples))
    await engine.start()

    async def one(i: int) -> list[TokenDelta]:
        req = GenerationRequest(
            f"k{i}",
            SamplingParams(max_tokens=task.generation.max_tokens, top_logprobs=20),
            messages=(Message("user", examples[i].chat()[-1]["content"]),),
            confidence_temperature=cal.temperature,
        )
        return [d async for d in engine.generate(req)]

    try:
        answers = await asyncio.gather(*(one(i) for i in range(len(examples))))
    finally:
        await engine.aclose()
    full = np.array([math.exp(sum(d.scaled_logprob or 0.0 for d in a)) for a in answers])
    print(f"{len(examples)} answers, T = {cal.temperature:.4f}, threshold = {cal.threshold:.4f}")
    print("| k | mean abs error | max abs error | decisions changed |")
    print("| --- | --- | --- | --- |")
    for k in (1, 2, 5, 10, 20):
        approx = np.array(
            [
                math.exp(
                    sum(
                        renormalized_logprob(
                            d.logprob, [t.logprob for t in d.top_logprobs[:k]], cal.temperature
                        )
                        for d in a
                    )
                )
                for a in answers
            ]
        )
        err = np.abs(approx - full)
        flips = int(((approx >= cal.threshold) != (full >= cal.threshold)).sum())
        print(f"| {k} | {err.mean():.2e} | {err.max():.2e} | {flips} of {len(full)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT / "data/banking77/test.jsonl")
    asyncio.run(run(parser.parse_args().data))
