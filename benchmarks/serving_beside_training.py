"""What a round's training costs the serving latency on a small machine (the demo's loop).

The builtin trainer runs as the loop runs it (a child process, `nice` 10, one torch
thread); meanwhile the embedded engine answers Banking77 prompts one after another with
its torch threads at N (each N in its own process, since torch's thread count is
process-wide), alternating the settings over several rounds so they share the machine's
noise; and the same without the trainer. Prints p50/p95 per setting and their ratios.

    python benchmarks/serving_beside_training.py [--student models/banking77] [--rounds 3]
        [--requests 150] [--threads 2 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "data" / "banking77"


def measure(student: Path, threads: int, requests: int) -> list[float]:
    """Seconds per answer, in a fresh process with ``threads`` torch threads."""
    code = f"""
import asyncio, json, sys, time
sys.path.insert(0, {str(ROOT)!r})
from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.engines.transformers import TransformersEngine
from gateway.examples import read_examples

async def main():
    engine = TransformersEngine({str(student)!r}, threads={threads})
    await engine.start()
    prompts = [e.prompt for e in read_examples({str(DATA / "test.jsonl")!r})][:{requests}]
    out = []
    for i, p in enumerate(prompts):
        gen = GenerationRequest(f"r{{i}}", SamplingParams(max_tokens=24), (Message("user", p),))
        t = time.perf_counter()
        async for _ in engine.generate(gen):
            pass
        out.append(time.perf_counter() - t)
    await engine.aclose()
    print(json.dumps(out[5:]))

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def trainer(out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = ["nice", "-n", "10", sys.executable, "-m", "gateway.cli", "student", "train"]
    argv += ["--data", str(DATA / "train.jsonl"), "--held-out", str(DATA / "calibration.jsonl")]
    argv += ["--out", str(out), "--time-budget", "3600", "--threads", "1"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--student", type=Path, default=ROOT / "models" / "banking77")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=150)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    args = p.parse_args()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for training in (False, True):
                child = trainer(Path(tmp) / f"s{r}") if training else None
                if child is not None:
                    time.sleep(20)  # past tokenizer training, into the steps
                try:
                    for n in args.threads:
                        key = f"threads {n}, {'beside training' if training else 'alone'}"
                        times.setdefault(key, []).extend(measure(args.student, n, args.requests))
                finally:
                    if child is not None:
                        child.terminate()
                        child.wait()
    base = None
    for key, xs in times.items():
        xs.sort()
        p50, p95 = statistics.median(xs), xs[int(0.95 * len(xs))]
        base = base or p50
        print(f"{key:32s} p50 {1000 * p50:7.1f} ms  p95 {1000 * p95:7.1f} ms  ({p50 / base:.2f}x)")


if __name__ == "__main__":
    main()
