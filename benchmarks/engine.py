"""The embedded engine through the gateway vs the same engine called in-process.

Two contenders, measured in interleaved rounds at 1, 8, 32 and 64 concurrent clients:

- ``direct``: ``TransformersEngine`` on the demo student, in this process, driven by N
  coroutines that each send a Banking77 test prompt, wait for the whole answer (with the
  calibrator's confidence temperature, as serving asks) and send the next;
- ``gateway``: ``distillgate serve`` on the same student and settings, driven by ``wrk``
  with N connections cycling through the same prompts, every answer forced to the student
  (``x-distillgate-force-route``) so it is the engine's throughput that is compared.

Then, at one client: time to first token, streaming (``stream: true``) through the gateway
vs the engine's first token in-process, and the time to the whole answer for both. The
gateway decides on the whole answer before sending a byte (serving.py), so its first
token comes after the engine's last: that gap is the price of routing, measured here.

Finally a py-spy profile of the gateway at saturation (top frames by own time).

    python -m benchmarks.engine [--rounds 3] [--duration 8] [--out reports/bench]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.overhead import Target, _wait_ready, free_port, parse_wrk
from calibration import load_calibration
from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.engines.transformers import TransformersEngine
from gateway.examples import read_examples
from gateway.tasks import load_tasks

ROOT = Path(__file__).resolve().parents[1]
PORT = free_port()


async def direct(
    engine: TransformersEngine, prompts: list[str], clients: int, duration: float, t: float
) -> float:
    """Requests per second from ``clients`` coroutines over ``duration`` seconds."""
    done = 0
    stop_at = time.perf_counter() + duration
    counter = iter(range(10**9))

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            i = next(counter)
            request = GenerationRequest(
                f"d{i}",
                SamplingParams(max_tokens=24),
                messages=(Message("user", prompts[i % len(prompts)]),),
                confidence_temperature=t,
            )
            async for _ in engine.generate(request):
                pass
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - started)


def wrk_script(prompts: list[str], path: Path) -> Path:
    bodies = [
        json.dumps({"model": "banking77", "messages": [{"role": "user", "content": p}]})
        for p in prompts[:500]
    ]
    lua = ["bodies = {"]
    lua += [f"  {json.dumps(b)}," for b in bodies]
    lua += [
        "}",
        "i = 0",
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        'wrk.headers["x-distillgate-force-route"] = "student"',
        "request = function()",
        "  i = i % #bodies + 1",
        "  return wrk.format(nil, nil, nil, bodies[i])",
        "end",
    ]
    path.write_text("\n".join(lua) + "\n")
    return path


def drive(
    url: str, clients: int, duration: int, script: Path, threads: int = 1
) -> dict[str, float]:
    """wrk with ``clients`` connections on ``url``'s chat endpoint, bodies from ``script``."""
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{clients}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            str(script),
            f"{url}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


async def first_tokens(
    engine: TransformersEngine, prompts: list[str], n: int, t: float
) -> dict[str, list[float]]:
    """Per request, one at a time: first and last token in-process, then first and last
    content chunk through the gateway (streaming)."""
    out: dict[str, list[float]] = collections.defaultdict(list)
    async with aiohttp.ClientSession() as http:
        for i in range(n):
            prompt = prompts[i % len(prompts)]
            request = GenerationRequest(
                f"t{i}",
                SamplingParams(max_tokens=24),
                messages=(Message("user", prompt),),
                confidence_temperature=t,
            )
            started = time.perf_counter()
            first = None
            async for _ in engine.generate(request):
                first = first or time.perf_counter()
            out["direct_first"].append(1000 * ((first or 0) - started))
            out["direct_last"].append(1000 * (time.perf_counter() - started))
            body = {
                "model": "banking77",
                "messages": [{"role": "user", "content": prompt}],
                "stream": True,
            }
            started = time.perf_counter()
            first = None
            async with http.post(
                f"http://127.0.0.1:{PORT}/v1/chat/completions",
                json=body,
                headers={"x-distillgate-force-route": "student"},
            ) as response:
                async for line in response.content:
                    if first is None and b'"content":"' in line and b'"content":""' not in line:
                        first = time.perf_counter()
            out["gateway_first"].append(1000 * ((first or 0) - started))
            out["gateway_last"].append(1000 * (time.perf_counter() - started))
    return out


def profile(pid: int, clients: int, script: Path, seconds: int, top: int = 15) -> list[str]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return ["(py-spy not installed)"]
    load = subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{clients}",
            f"-d{seconds + 3}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{PORT}/v1/chat/completions",
        ],
        stdout=subprocess.DEVNULL,
    )
    with tempfile.NamedTemporaryFile(suffix=".txt") as raw:
        time.sleep(1)
        subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "-d",
                str(seconds),
                "-r",
                "100",
                "--nonblocking",
                "--threads",
                "--format",
                "raw",
                "-o",
                raw.name,
            ],
            capture_output=True,
            check=False,
        )
        load.wait()
        own: collections.Counter[str] = collections.Counter()
        threads: collections.Counter[str] = collections.Counter()
        total = 0
        for line in Path(raw.name).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            n = int(count)
            total += n
            own[frames[-1]] += n
            threads[frames[0]] += n
    lines = [f"{100 * n / total:5.1f}%  {name}" for name, n in threads.most_common(4)]
    lines.append("-- own time, top frames --")
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return lines


def chart(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["clients"] for r in rows]
    ax.plot(x, [r["direct_rps"] for r in rows], marker="o", label="engine in-process")
    ax.plot(x, [r["gateway_rps"] for r in rows], marker="o", label="through the gateway (HTTP)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests / s")
    ax.set_title("embedded CPU engine, demo student")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--ttft-requests", type=int, default=100)
    parser.add_argument("--threads", type=int, help="torch threads, both contenders")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "img" / "bench_engine.png")
    args = parser.parse_args()
    task = load_tasks(ROOT / "tasks")["banking77"]
    if not (task.student / "config.json").is_file() or task.calibrator is None:
        raise SystemExit(
            "the demo student is missing: run `distillgate student build --task banking77`"
        )
    t = load_calibration(task.calibrator).temperature
    prompts = [e.prompt or "" for e in read_examples(ROOT / "data/banking77/test.jsonl")]
    env = {
        **os.environ,
        "DISTILLGATE_PORT": str(PORT),
        "DISTILLGATE_REDIS_URL": "",
        "DISTILLGATE_LOG_LEVEL": "warning",
        "DISTILLGATE_ALLOW_FORCE_ROUTE": "true",
        "DISTILLGATE_BUILD_MISSING_STUDENTS": "false",
        "DISTILLGATE_MAX_WAITING": "1024",
    }
    if args.threads:
        env["DISTILLGATE_TORCH_THREADS"] = str(args.threads)
    server = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], cwd=ROOT, env=env)
    target = Target("gateway", [], PORT, {}, ready_path="/readyz", process=server)
    engine = TransformersEngine(
        task.student, max_batch_size=32, max_waiting=1024, threads=args.threads
    )
    results: dict[str, dict[int, list[float]]] = {"direct": {}, "gateway": {}}
    try:
        _wait_ready(target)
        with tempfile.TemporaryDirectory() as tmp:
            script = wrk_script(prompts, Path(tmp) / "prompts.lua")

            async def run_direct(clients: int, duration: float) -> float:
                return await direct(engine, prompts, clients, duration, t)

            async def start() -> None:
                await engine.start()

            loop = asyncio.new_event_loop()
            loop.run_until_complete(start())
            loop.run_until_complete(run_direct(8, 2))  # warm-up
            drive(target.url, 8, 2, script)
            for rnd in range(args.rounds):
                for clients in args.clients:
                    pair = [("direct", None), ("gateway", None)]
                    for name, _ in pair if rnd % 2 == 0 else reversed(pair):
                        if name == "direct":
                            rps = loop.run_until_complete(run_direct(clients, args.duration))
                        else:
                            rps = drive(target.url, clients, args.duration, script)["rps"]
                        results[name].setdefault(clients, []).append(rps)
                        print(
                            f"round {rnd} clients {clients:>3} {name:<8} {rps:7.1f} req/s",
                            flush=True,
                        )
            ttft = loop.run_until_complete(first_tokens(engine, prompts, args.ttft_requests, t))
            loop.run_until_complete(engine.aclose())
            loop.close()
            top = profile(server.pid, 32, script, 8)
    finally:
        server.terminate()
        server.wait(30)

    rows = []
    print("\n| concurrent clients | direct req/s | gateway req/s | gateway / direct |")
    print("| --- | --- | --- | --- |")
    for clients in args.clients:
        d = statistics.median(results["direct"][clients])
        g = statistics.median(results["gateway"][clients])
        rows.append({"clients": clients, "direct_rps": d, "gateway_rps": g, "ratio": g / d})
        print(f"| {clients} | {d:.1f} | {g:.1f} | {g / d:.2f}x |")
    medians = {k: statistics.median(v) for k, v in ttft.items()}
    print(
        "\none client, medians of {} requests: first token in-process {direct_first:.1f} ms, "
        "whole answer in-process {direct_last:.1f} ms; through the gateway (streaming) first "
        "content {gateway_first:.1f} ms, last {gateway_last:.1f} ms".format(
            args.ttft_requests, **medians
        )
    )
    print("\nprofile of the gateway at 32 clients (py-spy, by thread, then own time):")
    print("\n".join(top))
    chart(rows, args.chart)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(
        json.dumps({"runs": results, "summary": rows, "ttft_ms": medians, "profile": top}, indent=1)
    )


if __name__ == "__main__":
    main()
