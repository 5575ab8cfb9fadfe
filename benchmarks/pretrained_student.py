"""A pretrained base fine-tuned with LoRA beside the from-scratch student, under one budget.

Both train at once on Banking77's training split, one torch thread each (the same machine
and the same minutes for both), selecting checkpoints on calibration.jsonl. Each is then
calibrated on calibration.jsonl (or a stratified part, ``--calibration-limit``) for 97 %
accepted-answer accuracy and evaluated on the test split (or a stratified part of it,
``--test-limit``) by ``distillgate evaluate`` (``--concurrency`` requests in flight);
serving latency is the embedded engine answering one request at a time, both students
measured in turn in the same run. Prints a markdown table; writes ``results.json``.

    python benchmarks/pretrained_student.py --base models/smollm2-135m --budget 1800 \\
        --out reports/pretrained [--skip-training] [--test-limit 1000] [--lr 5e-4] \\
        [--calibration-limit 770] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving_beside_training import measure  # noqa: E402

DATA = ROOT / "data" / "banking77"


def cli(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args], stdout=out, stderr=subprocess.STDOUT
        )


def wait(proc: subprocess.Popen[bytes], what: str) -> None:
    if proc.wait() != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}); see its log")


def train_both(base: Path, out: Path, budget: float, lr: float) -> None:
    common = ["--data", str(DATA / "train.jsonl"), "--held-out", str(DATA / "calibration.jsonl")]
    common += ["--time-budget", str(budget), "--threads", "1"]
    scratch = cli(
        "student", "train", *common, "--out", str(out / "scratch"), log=out / "scratch.log"
    )
    lora = cli(
        "student", "train", *common, "--out", str(out / "lora"), "--base", str(base),
        "--method", "lora", "--lr", str(lr), "--eval-every", "600", "--eval-limit", "200",
        log=out / "lora.log",
    )  # fmt: skip
    wait(scratch, "from-scratch training")
    wait(lora, "LoRA training")


def stratified(path: Path, limit: int | None, out: Path) -> Path:
    """The first examples of each label, round-robin, up to ``limit``."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if limit is None or limit >= len(rows):
        return path
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_label[row["answer"]].append(row)
    picked: list[dict[str, str]] = []
    depth = 0
    while len(picked) < limit:
        picked += [r[depth] for r in by_label.values() if depth < len(r)][: limit - len(picked)]
        depth += 1
    out.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return out


def judge(
    student: Path, calibration: Path, test: Path, log: Path, concurrency: int
) -> dict[str, float]:
    calibrator = student.with_name(student.name + ".calibration.json")
    report = student.with_name(student.name + ".report.json")
    started = time.monotonic()
    wait(
        cli(
            "calibrate", "--student", str(student), "--data", str(calibration),
            "--target-accuracy", "0.97", "--out", str(calibrator), log=log,
        ),
        f"calibrating {student}",
    )  # fmt: skip
    calibrated = time.monotonic()
    wait(
        cli(
            "evaluate", "--student", str(student), "--calibrator", str(calibrator),
            "--data", str(test), "--out", str(report), "--concurrency", str(concurrency),
            log=log,
        ),
        f"evaluating {student}",
    )  # fmt: skip
    figures = json.loads(report.read_text())
    card = json.loads((student / "distillgate_student.json").read_text())
    latency = measure(student, threads=2, requests=65)
    return {
        "steps": card["steps"],
        "held_out_exact_match": card["accuracy"],
        "accuracy": figures["student_accuracy"],
        "ece_before": figures["ece_before"],
        "ece_after": figures["ece_after"],
        "temperature": figures["temperature"],
        "escalation_rate": figures["escalation_rate"],
        "accepted_accuracy": figures["accepted_accuracy"],
        "routed_accuracy": figures["routed_accuracy"],
        "n_test": figures["n"],
        "latency_p50_ms": 1000 * statistics.median(latency),
        "latency_p95_ms": 1000 * statistics.quantiles(latency, n=20)[-1],
        "calibrate_s": calibrated - started,
        "evaluate_s": time.monotonic() - calibrated,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, default=ROOT / "models" / "smollm2-135m")
    p.add_argument("--budget", type=float, default=1800.0)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "pretrained")
    p.add_argument("--test-limit", type=int)
    p.add_argument("--calibration-limit", type=int)
    p.add_argument("--concurrency", type=int, default=64, help="evaluate's requests in flight")
    p.add_argument("--skip-training", action="store_true", help="judge the folders in --out")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_training:
        train_both(args.base, args.out, args.budget, args.lr)
    test = stratified(DATA / "test.jsonl", args.test_limit, args.out / "test.jsonl")
    calibration = stratified(
        DATA / "calibration.jsonl", args.calibration_limit, args.out / "calibration.jsonl"
    )
    results = {
        name: judge(
            args.out / name, calibration, test, args.out / f"{name}.judge.log", args.concurrency
        )
        for name in ("scratch", "lora")
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        ("optimizer steps in the budget", "steps", "{:.0f}"),
        ("held-out exact match (checkpoint pick)", "held_out_exact_match", "{:.3f}"),
        ("test accuracy (greedy)", "accuracy", "{:.3f}"),
        ("ECE before -> after scaling", None, ""),
        ("escalation at the 97 % target", "escalation_rate", "{:.1%}"),
        ("accuracy of accepted answers", "accepted_accuracy", "{:.3f}"),
        ("serving latency p50 / p95 (ms, one at a time)", None, ""),
    ]
    s, lo = results["scratch"], results["lora"]
    print(
        f"test examples: {s['n_test']}; calibration examples: {args.calibration_limit or 'all'}; "
        f"budget {args.budget:.0f} s each, run side by side\n"
    )
    print("| | from scratch (2.35M) | SmolLM2-135M + LoRA |\n| --- | --- | --- |")
    for label, key, fmt in rows:
        if key is None and label.startswith("ECE"):
            cells = [f"{r['ece_before']:.3f} -> {r['ece_after']:.3f}" for r in (s, lo)]
        elif key is None:
            cells = [f"{r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f}" for r in (s, lo)]
        else:
            cells = [fmt.format(r[key]) if r[key] is not None else "-" for r in (s, lo)]
        print(f"| {label} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
