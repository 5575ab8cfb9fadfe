"""The demo from zero: `distillgate serve` with no student, Banking77 traffic, no human action.

A fresh state (no student folder, no calibrator, an empty registry, no Redis server: the
spool, as the README's first command) is served by the real command; traffic arrives at a
steady rate and nobody acts. The loop trains the first student in the background from the
labelled seed set and the captured teacher answers, calibrates it, gates it and promotes it;
later rounds retrain on what the teacher answered. The gate's frozen set is the test split
(labelled, never trained or calibrated on); the traffic is the part of the training split
the seed does not hold, so no version was trained on a prompt before it is asked.

Figures: time from the command's start to the first answered request; requests until the
student answers half the traffic (a window of 100); per serving version the escalation rate,
the accuracy of the answers it kept and the teacher cost per 1,000 requests (demo prices,
from the teacher usage each response reports); the rounds' own reports. And a PNG.

    python benchmarks/loop_from_zero.py [--budget 1500] [--rate 3] [--promotions 3]
        [--seed-share 0.25] [--max-minutes 60] [--out DIR] [--png docs/img/loop_from_zero.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.examples import Example, read_examples, stratified_split, write_examples  # noqa: E402

DATA = ROOT / "data" / "banking77"
WINDOW = 100
PRICE_IN, PRICE_OUT = 1.0, 5.0  # USD per million teacher tokens, as tasks/banking77.toml


@dataclass
class Row:
    i: int
    t: float  # seconds since the command started
    route: str
    version: str
    correct: bool
    cost_usd: float
    latency_s: float


def task_file(work: Path, seed: Path, budget: float) -> Path:
    """The demo's own task file, pointing at a fresh state in ``work``."""
    text = (ROOT / "tasks" / "banking77.toml").read_text()
    swaps = {
        'student = "../models/banking77"': f'student = "{work / "no-student-yet"}"',
        'calibrator = "../models/banking77.calibration.json"': (
            f'calibrator = "{work / "no-calibrator-yet.json"}"'
        ),
        'train = "../data/banking77/train.jsonl"': f'train = "{seed}"',
        'registry = "../registry"': f'registry = "{work / "registry"}"',
        "train_budget_s = 1500": f"train_budget_s = {budget:g}",  # a cap: the steps decide
        "time_budget_s = 1500": f"time_budget_s = {budget:g}",
    }
    for old, new in swaps.items():
        assert old in text, f"tasks/banking77.toml no longer has {old!r}"
        text = text.replace(old, new)
    text = text.replace('"../data/', f'"{DATA.parent}/')
    tasks = work / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "banking77.toml").write_text(text)
    return tasks


def cost(header: str | None) -> float:
    if not header:
        return 0.0
    counts = dict(part.strip().split("=") for part in header.split(","))
    return (int(counts["input_tokens"]) * PRICE_IN + int(counts["output_tokens"]) * PRICE_OUT) / 1e6


def ask(client: httpx.Client, prompt: str) -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        json={"model": "banking77", "messages": [{"role": "user", "content": prompt}]},
    )


def first_answer(client: httpx.Client, started: float, prompt: str) -> float:
    """Seconds from the command's start to its first answered request."""
    while True:
        try:
            if ask(client, prompt).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def serving_version(client: httpx.Client) -> str:
    (model,) = client.get("/v1/models").json()["data"]
    return str(model["student_version"])


def summarise(rows: list[Row]) -> dict[str, object]:
    versions: dict[str, list[Row]] = {}
    for row in rows:
        versions.setdefault(row.version, []).append(row)
    per_version = {}
    for version, served in versions.items():
        kept = [r for r in served if r.route == "student"]
        per_version[version] = {
            "requests": len(served),
            "first_at_s": round(served[0].t, 1),
            "escalation_rate": round(1 - len(kept) / len(served), 4),
            "accepted_accuracy": round(sum(r.correct for r in kept) / len(kept), 4)
            if kept
            else None,
            "routed_accuracy": round(sum(r.correct for r in served) / len(served), 4),
            "cost_per_1k_usd": round(1000 * sum(r.cost_usd for r in served) / len(served), 4),
        }
    half = next(
        (
            i + 1
            for i in range(WINDOW - 1, len(rows))
            if sum(r.route == "student" for r in rows[i - WINDOW + 1 : i + 1]) >= WINDOW / 2
        ),
        None,
    )
    return {"requests": len(rows), "requests_until_student_answers_half": half} | {
        "versions": per_version
    }


def plot(rows: list[Row], summary: dict[str, object], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), height_ratios=(2, 1))
    xs = list(range(WINDOW, len(rows) + 1))
    escalation = [1 - sum(r.route == "student" for r in rows[i - WINDOW : i]) / WINDOW for i in xs]
    top.plot(xs, escalation, label=f"escalation rate (last {WINDOW} requests)")
    cost_1k = [1000 * sum(r.cost_usd for r in rows[i - WINDOW : i]) / WINDOW for i in xs]
    twin = top.twinx()
    twin.plot(xs, cost_1k, color="tab:red", alpha=0.6, label="teacher cost per 1k requests")
    twin.set_ylabel("USD per 1,000 requests")
    versions = summary["versions"]
    assert isinstance(versions, dict)
    for version in versions:
        start = next(r.i for r in rows if r.version == version)
        top.axvline(start, color="grey", linestyle=":")
        top.annotate(version, (start, 1.02), fontsize=8)
    top.set_ylim(0, 1.08)
    top.set_xlabel("request")
    top.set_ylabel("share sent to the teacher")
    top.legend(loc="lower left")
    twin.legend(loc="lower right")
    top.set_title("Banking77 from zero: no student, the loop alone")
    names = [v for v in versions if versions[v]["accepted_accuracy"] is not None]
    bottom.bar(names, [versions[v]["accepted_accuracy"] for v in names])
    bottom.axhline(0.97, color="black", linestyle="--", label="target 0.97")
    bottom.set_ylim(0.9, 1.0)
    bottom.set_ylabel("accuracy of kept answers")
    bottom.legend(loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=float, default=1500.0, help="training seconds' cap a round")
    p.add_argument("--rate", type=float, default=3.0, help="requests per second")
    p.add_argument("--promotions", type=int, default=3, help="stop after this many")
    p.add_argument("--tail", type=int, default=600, help="requests served after the last")
    p.add_argument("--seed-share", type=float, default=0.25, help="labelled seed, of train")
    p.add_argument("--max-minutes", type=float, default=60.0)
    p.add_argument("--port", type=int, default=8777)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "loop-from-zero")
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "img" / "loop_from_zero.png")
    args = p.parse_args()
    work: Path = args.out
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    traffic, seed = stratified_split(
        read_examples(DATA / "train.jsonl"), fraction=args.seed_share, seed=0
    )
    write_examples(work / "seed.jsonl", seed)
    traffic = [traffic[i] for i in _order(len(traffic))]
    env = {
        **os.environ,
        "DISTILLGATE_TASKS_DIR": str(task_file(work, work / "seed.jsonl", args.budget)),
        "DISTILLGATE_REDIS_URL": "redis://127.0.0.1:1/0",  # no Redis server: the spool
        "DISTILLGATE_SPOOL_DIR": str(work / "spool"),
        "DISTILLGATE_LOG_LEVEL": "warning",
        "DISTILLGATE_PORT": str(args.port),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("ANTHROPIC_API_KEY", None)  # the simulator is the teacher
    print(f"seed {len(seed)} labelled pairs, traffic pool {len(traffic)} prompts", flush=True)

    started = time.perf_counter()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=ROOT, start_new_session=True
    )
    url = f"http://127.0.0.1:{args.port}"
    rows: list[Row] = []
    lock = threading.Lock()
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            to_first = first_answer(client, started, traffic[0].prompt or "")
            print(f"first answered request after {to_first:.1f} s", flush=True)

            def one(i: int, example: Example) -> None:
                sent = time.perf_counter()
                r = ask(client, example.prompt or "")
                r.raise_for_status()
                row = Row(
                    i=i,
                    t=round(sent - started, 2),
                    route=r.headers["x-distillgate-route"],
                    version=r.headers["x-distillgate-student"],
                    correct=r.json()["choices"][0]["message"]["content"] == example.answer,
                    cost_usd=cost(r.headers.get("x-distillgate-teacher-usage")),
                    latency_s=round(time.perf_counter() - sent, 4),
                )
                with lock:
                    rows.append(row)

            deadline = started + 60 * args.max_minutes
            promoted: list[str] = []
            last_promotion_at = 0
            with ThreadPoolExecutor(8) as pool:
                beat = time.perf_counter()
                for i in range(10**9):
                    example = traffic[i % len(traffic)]
                    beat += 1 / args.rate
                    time.sleep(max(0.0, beat - time.perf_counter()))
                    pool.submit(one, i, example)
                    if i % 50 == 0:
                        version = serving_version(client)
                        if version not in ("none", *promoted):
                            promoted.append(version)
                            last_promotion_at = i
                            print(f"request {i}: {version} serves", flush=True)
                    enough = len(promoted) >= args.promotions and i - last_promotion_at >= args.tail
                    if enough or time.perf_counter() > deadline:
                        break
    finally:
        os.killpg(gateway.pid, 15)
        gateway.wait(60)
    rows.sort(key=lambda r: r.i)
    summary = {"time_to_first_answer_s": round(to_first, 1)} | summarise(rows)
    rounds = (work / "registry" / "banking77" / "rounds.jsonl").read_text().splitlines()
    keep = ("trigger", "outcome", "reason", "candidate", "seconds", "records_seen", "gate")
    summary["rounds"] = [
        {k: report.get(k) for k in keep}
        | {"data": {k: v for k, v in report["data"].items() if k.endswith("_with_labelled")}}
        for report in map(json.loads, rounds)
        if report["outcome"] != "skipped"
    ]
    summary["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "png")}
    (work / "rows.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in rows))
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    plot(rows, summary, args.png)


def _order(n: int) -> list[int]:
    import random

    return random.Random(1).sample(range(n), n)


if __name__ == "__main__":
    main()
