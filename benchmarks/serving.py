"""Gateway throughput and latency, continuous batching vs one request at a time.

Starts two gateways on the demo student, one batching (max_batch_size 32) and one not
(max_batch_size 1), and drives them in alternating rounds from one client process so
both see the same machine noise; prints medians over rounds and the ratios.

    python benchmarks/serving.py [--rounds 3] [--requests 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.examples import read_examples  # noqa: E402

# The student's batching is what is measured: every request is answered by the student.
STUDENT_ONLY = {"x-distillgate-force-route": "student"}


def start(port: int, batch: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DISTILLGATE_PORT": str(port),
        "DISTILLGATE_MAX_BATCH_SIZE": str(batch),
        "DISTILLGATE_LOG_LEVEL": "warning",
        "DISTILLGATE_BUILD_MISSING_STUDENTS": "false",
        "DISTILLGATE_ALLOW_FORCE_ROUTE": "true",
    }
    cmd = [sys.executable, "-m", "gateway.cli", "serve"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not become ready (is the demo student built?)")


async def drive(
    url: str,
    prompts: list[str],
    concurrency: int,
    total: int,
    headers: dict[str, str] = STUDENT_ONLY,
) -> tuple[float, list[float]]:
    """Run ``total`` requests from ``concurrency`` clients; return (requests/s, latencies)."""
    latencies: list[float] = []
    next_i = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < total:
            i = next_i
            next_i += 1
            body = {
                "model": "banking77",
                "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
            }
            t = time.perf_counter()
            r = await http.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return total / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=256, help="per round at concurrency > 1")
    args = parser.parse_args()
    prompts = [e.prompt or "" for e in read_examples(ROOT / "data/banking77/test.jsonl")]
    servers = {"batched": (8931, 32), "unbatched": (8932, 1)}
    procs = [start(port, batch) for port, batch in servers.values()]
    try:
        for port, _ in servers.values():
            wait_ready(f"http://127.0.0.1:{port}")
        results: dict[tuple[str, int], list[float]] = {}
        p50s: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for concurrency in (1, 8, 32):
                total = 64 if concurrency == 1 else args.requests
                for name, (port, _) in servers.items():
                    rps, lat = asyncio.run(
                        drive(f"http://127.0.0.1:{port}", prompts, concurrency, total)
                    )
                    results.setdefault((name, concurrency), []).append(rps)
                    if concurrency == 1:
                        p50s[name].append(statistics.median(lat) * 1000)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)

    print(
        f"single request p50: batched {statistics.median(p50s['batched']):.1f} ms, "
        f"unbatched {statistics.median(p50s['unbatched']):.1f} ms"
    )
    print("| concurrent clients | batched req/s | unbatched req/s | ratio |")
    print("| --- | --- | --- | --- |")
    for concurrency in (1, 8, 32):
        b = statistics.median(results[("batched", concurrency)])
        u = statistics.median(results[("unbatched", concurrency)])
        print(f"| {concurrency} | {b:.1f} | {u:.1f} | {b / u:.2f}x |")


if __name__ == "__main__":
    main()
