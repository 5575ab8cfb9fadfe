"""What the cache of teacher answers saves: Banking77 test prompts replayed with realistic
repetition through a running gateway, with the cache off and on.

Each request's prompt is drawn from a Zipf distribution over the test set (rank r drawn with
probability proportional to 1 / r^s, s = 1.1, the ranks a seeded shuffle of the prompts),
the same sequence for both runs. Each run is a fresh ``distillgate serve`` of the Banking77
task (the student given, its calibrator, the local teacher simulator, a fresh redis-server),
``[cache] enabled`` false then true. Per run: teacher calls and teacher dollars per 1,000
requests (from the gateway's own metrics), cache hits, the routed answers' accuracy against
the test labels, and whether any request's answer differs between the runs. Then
``distillgate report cost`` reads the run's usage ledger, and its totals (teacher dollars,
dollars saved, requests by route) are checked against the metrics.

    python -m benchmarks.teacher_cache [--requests 5000] [--s 1.1] [--concurrency 8]
        [--student models/banking77] [--calibrator models/banking77.calibration.json]
        [--chart docs/img/bench_cost_report.png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.serving import wait_ready
from gateway.examples import read_examples
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
TASK = "banking77"


def zipf_draws(n_items: int, n_draws: int, s: float, seed: int) -> list[int]:
    """Item indices drawn by a Zipf law over ranks; which item holds which rank is shuffled."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** s
    ranks = rng.choice(n_items, size=n_draws, p=weights / weights.sum())
    items = rng.permutation(n_items)
    return [int(items[r]) for r in ranks]


def task_file(folder: Path, student: Path, calibrator: Path, cache: bool) -> Path:
    """The demo task with absolute paths, no [build] or [loop], the cache on or off."""
    text = (ROOT / "tasks" / f"{TASK}.toml").read_text()
    text = text.replace('"../models/banking77"', json.dumps(str(student)))
    text = text.replace('"../models/banking77.calibration.json"', json.dumps(str(calibrator)))
    text = text.replace('"../data/', json.dumps(str(ROOT / "data"))[:-1] + "/")
    kept, skipping = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skipping = line.strip() in ("[build]", "[loop]")
        if not skipping:
            kept.append(line)
    kept.append(f"\n[cache]\nenabled = {'true' if cache else 'false'}\n")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TASK}.toml").write_text("\n".join(kept))
    return folder


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a series' samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def replay(url: str, prompts: list[str], concurrency: int) -> list[tuple[str, str]]:
    """(route, answer) of each prompt, in order."""
    out: list[tuple[str, str]] = [("", "")] * len(prompts)
    next_i = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < len(prompts):
            i = next_i
            next_i += 1
            body = {"model": TASK, "messages": [{"role": "user", "content": prompts[i]}]}
            r = await http.post(f"{url}/v1/chat/completions", json=body)
            r.raise_for_status()
            content = r.json()["choices"][0]["message"]["content"]
            out[i] = (r.headers["x-distillgate-route"], content)

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as h:
        await asyncio.gather(*(client(h) for _ in range(concurrency)))
    return out


def run(
    work: Path, cache: bool, args: argparse.Namespace, prompts: list[str]
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    redis = RedisServer(work / f"redis-{cache}")
    redis.start()
    port = free_port()
    env = {
        **os.environ,
        "DISTILLGATE_TASKS_DIR": str(
            task_file(work / f"tasks-{cache}", args.student, args.calibrator, cache)
        ),
        "DISTILLGATE_PORT": str(port),
        "DISTILLGATE_REDIS_URL": redis.url,
        "DISTILLGATE_SPOOL_DIR": str(work / f"spool-{cache}"),
        "DISTILLGATE_LOOP": "off",
        "DISTILLGATE_BUILD_MISSING_STUDENTS": "false",
        "DISTILLGATE_LOG_LEVEL": "warning",
    }
    env.pop("ANTHROPIC_API_KEY", None)  # the local simulator is the teacher
    serve = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        answers = asyncio.run(replay(url, prompts, args.concurrency))
        text = httpx.get(f"{url}/metrics").text
        time.sleep(2.0)  # the usage ledger's flush (every second)
        chart = args.chart if cache and args.chart else work / f"cost-{cache}.png"
        report = cost_report(env, chart)
    finally:
        serve.terminate()
        serve.wait(30)
        redis.stop()
    figures = {
        "teacher_calls": metric(text, "distillgate_teacher_seconds_count", task=TASK),
        "escalation_calls": metric(
            text, "distillgate_teacher_seconds_count", task=TASK, purpose="escalation"
        ),
        "teacher_usd": metric(text, "distillgate_teacher_cost_usd_total", task=TASK),
        "cache_hits": metric(
            text, "distillgate_teacher_cache_lookups_total", task=TASK, outcome="hit"
        ),
        "cache_saved_usd": metric(text, "distillgate_teacher_cache_saved_usd_total", task=TASK),
    }
    check_report(report, text)
    return figures, answers


def cost_report(env: dict[str, str], chart: Path) -> dict[str, Any]:
    """``distillgate report cost`` as a user runs it, on the run's ledger."""
    command = ["report", "cost", "--since", "1d", "--json", "--chart", str(chart)]
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def check_report(report: dict[str, Any], text: str) -> None:
    """The report's totals against the metrics scraped at the end of the replay."""
    total = report["rows"][-1]
    pairs = {
        "teacher $": (total["teacher_usd"], metric(text, "distillgate_teacher_cost_usd_total")),
        "saved $": (total["saved_usd"], metric(text, "distillgate_estimated_savings_usd_total")),
    }
    for route, n in total["requests"].items():
        pairs[f"requests {route}"] = (n, metric(text, "distillgate_requests_total", route=route))
    worst = max(abs(a - b) for a, b in pairs.values())
    shown = ", ".join(f"{k} {a:.4f} / {b:.4f}" for k, (a, b) in pairs.items())
    verdict = "match to the cent" if worst < 0.005 else "DIFFER"
    print(f"  report vs metrics: {shown}; largest difference {worst:.2g}: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--s", type=float, default=1.1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--student", type=Path, default=ROOT / "models" / TASK)
    parser.add_argument(
        "--calibrator", type=Path, default=ROOT / "models" / f"{TASK}.calibration.json"
    )
    parser.add_argument("--chart", type=Path, help="the cost report's chart of the cached run")
    args = parser.parse_args()
    args.student, args.calibrator = args.student.resolve(), args.calibrator.resolve()
    examples = read_examples(ROOT / "data" / TASK / "test.jsonl")
    draws = zipf_draws(len(examples), args.requests, args.s, args.seed)
    prompts = [examples[i].prompt or "" for i in draws]
    labels = [examples[i].answer for i in draws]
    print(f"{args.requests} requests over {len(set(draws))} distinct prompts (Zipf s={args.s})")
    work = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    results = {}
    for cache in (False, True):
        figures, answers = run(work, cache, args, prompts)
        correct = sum(a == label for (_, a), label in zip(answers, labels, strict=True))
        routes = [r for r, _ in answers]
        per_k = 1000 / args.requests
        results[cache] = answers
        print(
            f"cache {'on ' if cache else 'off'}: teacher calls {figures['teacher_calls']:.0f} "
            f"({figures['teacher_calls'] * per_k:.1f} per 1,000; escalations "
            f"{figures['escalation_calls'] * per_k:.1f}), teacher "
            f"${figures['teacher_usd'] * per_k:.4f} per 1,000, "
            f"cache hits {figures['cache_hits']:.0f} "
            f"(saved ${figures['cache_saved_usd']:.4f}), student share "
            f"{routes.count('student') / len(routes):.3f}, routed accuracy "
            f"{correct / len(answers):.4f}",
            flush=True,
        )
    changed = sum(a != b for (_, a), (_, b) in zip(results[False], results[True], strict=True))
    print(f"answers that differ between the runs: {changed}")


if __name__ == "__main__":
    main()
