"""On a GPU: the gateway with vLLM in-process against ``vllm serve``, same model, same load.

Contenders, all resident on one GPU (each gets a share of its memory), measured in
interleaved rounds with ``wrk`` cycling through Banking77 test prompts:

- ``vllm-serve``: vLLM's own OpenAI server on the student folder;
- ``distillgate-vllm``: the gateway with ``[engine] kind = "vllm"`` (same engine
  arguments), calibrated confidence and routing on every request (no teacher: every answer
  is the student's, as vLLM's would be);
- ``distillgate-cpu`` (``--with-cpu``): the gateway on the embedded engine, CPU only.

Prints req/s and p50/p99 per contender and concurrency, and the ratios the issue sets
(in-process vLLM >= 95 % of vllm serve's throughput at saturation, p50 within 10 %).

    python -m benchmarks.vllm --student models/banking77 [--rounds 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.engine import drive, wrk_script
from benchmarks.overhead import Target, _wait_ready, free_port
from gateway.training.examples import read_examples

ROOT = Path(__file__).resolve().parents[1]


def task_file(folder: Path, student: Path, calibrator: Path | None, engine: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cal = f'calibrator = "{calibrator}"\n' if calibrator else ""
    (folder / "banking77.toml").write_text(
        f'student = "{student}"\n{cal}'
        f'answers_file = "{ROOT / "data/banking77/categories.json"}"\n'
        f"{engine}[generation]\nmax_tokens = 24\n"
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=ROOT / "models" / "banking77")
    parser.add_argument(
        "--calibrator", type=Path, default=ROOT / "models/banking77.calibration.json"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--memory-share", type=float, default=0.4)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--with-cpu", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    student = args.student.resolve()
    calibrator = args.calibrator.resolve() if args.calibrator.is_file() else None
    engine_args = {
        "max_num_seqs": args.max_num_seqs,
        "max_logprobs": 20,
        "max_model_len": 256,
        "gpu_memory_utilization": args.memory_share,
    }
    prompts = [e.prompt or "" for e in read_examples(ROOT / "data/banking77/test.jsonl")]
    quiet = {
        "DISTILLGATE_REDIS_URL": "",
        "DISTILLGATE_LOG_LEVEL": "warning",
        "DISTILLGATE_BUILD_MISSING_STUDENTS": "false",
        "DISTILLGATE_MAX_WAITING": "4096",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vllm_port, dg_port, cpu_port = free_port(), free_port(), free_port()
        engine_toml = '[engine]\nkind = "vllm"\n' + "".join(
            f"{k} = {v}\n" for k, v in engine_args.items()
        )
        contenders = [
            Target(
                "vllm-serve",
                [
                    sys.executable,
                    "-m",
                    "vllm.entrypoints.openai.api_server",
                    "--model",
                    str(student),
                    "--served-model-name",
                    "banking77",
                    "--port",
                    str(vllm_port),
                    "--max-num-seqs",
                    str(args.max_num_seqs),
                    "--max-logprobs",
                    "20",
                    "--max-model-len",
                    "256",
                    "--gpu-memory-utilization",
                    str(args.memory_share),
                ],
                vllm_port,
                {},
                ready_path="/health",
            ),
            Target(
                "distillgate-vllm",
                [sys.executable, "-m", "gateway.cli", "serve"],
                dg_port,
                {
                    **quiet,
                    "DISTILLGATE_PORT": str(dg_port),
                    "DISTILLGATE_TASKS_DIR": str(
                        task_file(work / "gpu", student, calibrator, engine_toml)
                    ),
                },
                ready_path="/readyz",
            ),
        ]
        if args.with_cpu:
            contenders.append(
                Target(
                    "distillgate-cpu",
                    [sys.executable, "-m", "gateway.cli", "serve"],
                    cpu_port,
                    {
                        **quiet,
                        "DISTILLGATE_PORT": str(cpu_port),
                        "DISTILLGATE_DEVICE": "cpu",
                        "DISTILLGATE_TASKS_DIR": str(
                            task_file(work / "cpu", student, calibrator, "")
                        ),
                    },
                    ready_path="/readyz",
                )
            )
        script = wrk_script(prompts, work / "prompts.lua")
        runs: list[dict[str, object]] = []
        try:
            for c in contenders:  # one at a time: each measures its free GPU memory at start
                c.process = subprocess.Popen(c.command, cwd=ROOT, env={**os.environ, **c.env})
                _wait_ready(c, timeout_s=600)
            for c in contenders:
                drive(c.url, 16, 5, script, threads=2)  # warm-up (CUDA graphs, caches)
            for rnd in range(args.rounds):
                for conns in args.connections:
                    order = contenders if rnd % 2 == 0 else contenders[::-1]
                    for c in order:
                        figures = drive(c.url, conns, args.duration, script, threads=2)
                        runs.append(
                            {"round": rnd, "target": c.name, "connections": conns, **figures}
                        )
                        print(
                            f"round {rnd} c={conns:>3} {c.name:<17} {figures['rps']:8.1f} req/s "
                            f"p50 {figures['p50_ms']:7.2f} ms errors {figures['errors']}",
                            flush=True,
                        )
        finally:
            for c in contenders:
                if c.process is not None:
                    c.process.terminate()
                    c.process.wait(60)
    summary = []
    print("\n| connections | target | req/s | p50 ms | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for conns in args.connections:
        for c in contenders:
            mine = [r for r in runs if r["target"] == c.name and r["connections"] == conns]
            row = {
                "target": c.name,
                "connections": conns,
                "rps": statistics.median(float(r["rps"]) for r in mine),  # type: ignore[arg-type]
                "p50_ms": statistics.median(float(r["p50_ms"]) for r in mine),  # type: ignore[arg-type]
                "p99_ms": statistics.median(float(r["p99_ms"]) for r in mine),  # type: ignore[arg-type]
                "errors": sum(int(r["errors"]) for r in mine),  # type: ignore[call-overload]
            }
            summary.append(row)
            print(
                f"| {conns} | {c.name} | {row['rps']:.1f} | {row['p50_ms']:.2f} | "
                f"{row['p99_ms']:.2f} | {row['errors']} |"
            )
    by = {(r["target"], r["connections"]): r for r in summary}
    for conns in args.connections:
        g, v = by[("distillgate-vllm", conns)], by[("vllm-serve", conns)]
        print(
            f"distillgate-vllm / vllm-serve @ {conns}: throughput {g['rps'] / v['rps']:.3f}x, "
            f"p50 {g['p50_ms'] / v['p50_ms']:.3f}x"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vllm.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
