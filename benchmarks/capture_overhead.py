"""What capture costs the client: escalations with capture off, to Redis, and spooling.

Three gateways on the demo student and the demo task, every request forced to the
teacher (the local simulator, in-process, answering at once) so every request is an
escalation and produces a record: capture off (``DISTILLGATE_REDIS_URL=""``), capture
to a live redis-server, and capture with Redis unreachable (everything goes to the disk
spool). They are driven in alternating rounds from one client so they share the
machine's noise; medians over rounds, and ratios against capture off.

    python benchmarks/capture_overhead.py [--rounds 5] [--requests 300] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import drive, wait_ready  # noqa: E402
from gateway.examples import read_examples  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

TEACHER_ONLY = {"x-distillgate-force-route": "teacher"}


def start(port: int, redis_url: str, spool: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DISTILLGATE_PORT": str(port),
        "DISTILLGATE_REDIS_URL": redis_url,
        "DISTILLGATE_SPOOL_DIR": str(spool),
        "DISTILLGATE_CAPTURE_TIMEOUT_S": "0.5",
        "DISTILLGATE_LOG_LEVEL": "warning",
        "DISTILLGATE_BUILD_MISSING_STUDENTS": "false",
        "DISTILLGATE_ALLOW_FORCE_ROUTE": "true",
    }
    env.pop("ANTHROPIC_API_KEY", None)
    cmd = [sys.executable, "-m", "gateway.cli", "serve"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    prompts = [e.prompt or "" for e in read_examples(ROOT / "data/banking77/test.jsonl")]
    work = Path(tempfile.mkdtemp(prefix="capture-bench-"))
    redis = RedisServer(work / "redis")
    redis.start()
    dead = RedisServer(work / "dead")  # a port nothing listens on
    servers = {
        "capture off": (8941, ""),
        "capture to Redis": (8942, redis.url),
        "Redis down (spool)": (8943, dead.url),
    }
    procs = [start(port, url, work / f"spool-{port}") for port, url in servers.values()]
    rps: dict[str, list[float]] = {name: [] for name in servers}
    p50: dict[str, list[float]] = {name: [] for name in servers}
    p99: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for port, _ in servers.values():
            wait_ready(f"http://127.0.0.1:{port}")
        for _ in range(args.rounds):
            for name, (port, _) in servers.items():
                rate, lat = asyncio.run(
                    drive(
                        f"http://127.0.0.1:{port}",
                        prompts,
                        args.concurrency,
                        args.requests,
                        headers=TEACHER_ONLY,
                    )
                )
                lat.sort()
                rps[name].append(rate)
                p50[name].append(lat[len(lat) // 2] * 1000)
                p99[name].append(lat[int(len(lat) * 0.99) - 1] * 1000)
        stored = redis.client().xlen("distillgate:{banking77}:capture")
        spooled = sum(p.stat().st_size for p in (work / "spool-8943").glob("*.jsonl"))
        metrics = httpx.get("http://127.0.0.1:8942/metrics").text
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        redis.stop()

    base = statistics.median(rps["capture off"])
    print(f"{args.rounds} rounds x {args.requests} escalations, {args.concurrency} clients")
    print("| gateway | req/s | vs capture off | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    for name in servers:
        r = statistics.median(rps[name])
        print(
            f"| {name} | {r:.1f} | {r / base:.2f}x | {statistics.median(p50[name]):.1f} "
            f"| {statistics.median(p99[name]):.1f} |"
        )
    sent = args.rounds * args.requests
    print(f"records in the stream: {stored} of {sent}; spool of the Redis-down gateway: "
          f"{spooled / 1e6:.1f} MB")  # fmt: skip
    written = [ln for ln in metrics.splitlines() if ln.startswith("distillgate_capture_records")]
    print("\n".join(written))


if __name__ == "__main__":
    main()
