"""What the fleet-wide rate limits cost a request: one admission through this process's
buckets, through the shared buckets on a single Redis, and on a Redis Cluster, interleaved
in one run (this machine is shared and noisy) with C admissions in flight at once.

    python -m benchmarks.shared_limits [--rounds 5] [--admissions 2000] [--concurrency 16]

Needs ``redis-server`` (apt-get install redis-server); starts its own servers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from gateway.keys import ClientKey, key_digest
from gateway.limits import ProcessRateLimiter, RateLimiter, RedisRateLimiter
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import RedisServer


async def admissions(limiter: RateLimiter, n: int, concurrency: int) -> list[float]:
    """Per-admission latency (s) of ``n`` admissions, ``concurrency`` at a time."""
    keys = [ClientKey(f"k{i}", key_digest(f"k{i}"), 10**9, 10**9) for i in range(64)]
    times: list[float] = []

    async def one(i: int) -> None:
        start = time.perf_counter()
        await limiter.admit(keys[i % len(keys)])
        limiter.charge(keys[i % len(keys)], 30)
        times.append(time.perf_counter() - start)

    for start in range(0, n, concurrency):
        await asyncio.gather(*(one(i) for i in range(start, min(start + concurrency, n))))
    return times


async def run(args: argparse.Namespace, single: str, cluster: str) -> None:
    limiters: dict[str, RateLimiter] = {
        "process": ProcessRateLimiter(),
        "redis": RedisRateLimiter.from_url(single, timeout_s=1.0),
        "redis cluster": RedisRateLimiter.from_url(cluster, timeout_s=1.0),
    }
    for limiter in limiters.values():
        await admissions(limiter, 200, args.concurrency)  # warm: connections, scripts
    results: dict[str, list[float]] = {name: [] for name in limiters}
    for _ in range(args.rounds):
        for name, limiter in limiters.items():
            results[name] += await admissions(limiter, args.admissions, args.concurrency)
    base = statistics.median(results["process"])
    print(f"| limits | p50 us | p99 us | p50 vs process |  (C={args.concurrency})")
    print("| --- | --- | --- | --- |")
    for name, times in results.items():
        times.sort()
        p50, p99 = statistics.median(times), times[int(len(times) * 0.99)]
        print(f"| {name} | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} | {p50 / base:.1f}x |")
    for limiter in limiters.values():
        if isinstance(limiter, RedisRateLimiter):
            assert limiter.shared, "Redis did not answer during the benchmark"
            await limiter.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--admissions", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        single = RedisServer(Path(tmp) / "single")
        cluster = RedisClusterServers(Path(tmp) / "cluster")
        single.start()
        cluster.start()
        try:
            asyncio.run(run(args, single.url, cluster.url))
        finally:
            single.stop()
            cluster.stop()


if __name__ == "__main__":
    main()
