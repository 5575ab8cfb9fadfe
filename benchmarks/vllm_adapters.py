"""Two tasks as two LoRA adapters on one in-process vLLM engine, against one task alone.

The same base, the same engine (``SharedBases``), the same concurrent load of Banking77
prompts: first every request to adapter A, then half to A and half to B (a copy of A
under another folder is enough: vLLM holds it as a second adapter). Prints requests per
second and p50 latency of each, alternating over rounds so they share the GPU's noise.
Needs a GPU and vllm (scripts/gpu_procedure.sh lora).

    python -m benchmarks.vllm_adapters --adapter models/banking77-lora [--requests 2000]
        [--concurrency 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.engines.base import GenerationRequest, Message, SamplingParams  # noqa: E402
from gateway.engines.vllm import AdapterEngine, SharedBases  # noqa: E402
from gateway.examples import read_examples  # noqa: E402


async def load(
    engines: list[AdapterEngine], prompts: list[str], concurrency: int
) -> tuple[float, float]:
    """Requests per second and p50 seconds, requests dealt round-robin over ``engines``."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int, prompt: str) -> None:
        request = GenerationRequest(
            f"r{i}-{time.monotonic_ns()}",
            SamplingParams(max_tokens=24),
            (Message("user", prompt),),
        )
        async with gate:
            started = time.perf_counter()
            async for _ in engines[i % len(engines)].generate(request):
                pass
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return len(prompts) / (time.perf_counter() - started), statistics.median(latencies)


async def main(args: argparse.Namespace) -> None:
    second = args.adapter.with_name(args.adapter.name + "-second-task")
    if not second.exists():
        shutil.copytree(args.adapter, second)
    settings = {"max_num_seqs": 256, "max_loras": 2, "max_lora_rank": 64}
    bases = SharedBases()
    a, b = bases.adapter(args.adapter, settings), bases.adapter(second, settings)
    await a.start()
    await b.start()
    rows = [e.prompt or "" for e in read_examples(ROOT / "data" / "banking77" / "test.jsonl")]
    prompts = (rows * (args.requests // len(rows) + 1))[: args.requests]
    await load([a, b], prompts[:256], args.concurrency)  # warm-up: both adapters loaded
    results: dict[str, list[tuple[float, float]]] = {"one task": [], "two tasks": []}
    for _ in range(args.rounds):
        results["one task"].append(await load([a], prompts, args.concurrency))
        results["two tasks"].append(await load([a, b], prompts, args.concurrency))
    await a.aclose()
    await b.aclose()
    summary = {
        name: {
            "requests_per_s": statistics.median(r for r, _ in runs),
            "p50_ms": 1000 * statistics.median(p for _, p in runs),
        }
        for name, runs in results.items()
    }
    ratio = summary["two tasks"]["requests_per_s"] / summary["one task"]["requests_per_s"]
    print(json.dumps({**summary, "two_over_one_throughput": ratio}, indent=2))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", type=Path, required=True)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(p.parse_args()))
