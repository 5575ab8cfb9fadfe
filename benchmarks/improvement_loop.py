"""One round of the improvement loop on Banking77, with the project's own commands.

A deliberately weak student (trained on 57 of the 77 intents, short budget) serves half of
the test split as live traffic through a real gateway, with Redis capture and the teacher
simulator. Then, exactly as a scheduled job would:

    distillgate export --task banking77 --out captured.jsonl
    distillgate student train --data weak-train.jsonl --data captured.jsonl --init-from weak ...
    distillgate calibrate --task banking77 --student round1 --from-stream --data calibration.jsonl
    (point the task at the new pair)  curl -X POST /admin/reload

and the same traffic is served again. Figures: escalation rate and accepted-answer accuracy
on that traffic before and after, and (offline, `distillgate evaluate`, nothing captured)
on the other half of the test split, which neither round trained or calibrated on.

    python benchmarks/improvement_loop.py [--budget 300] [--target-accuracy 0.95] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.examples import Example, read_examples, stratified_split, write_examples  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

DATA = ROOT / "data" / "banking77"
ADMIN = "bench-admin"
CLI = [sys.executable, "-m", "gateway.cli"]


def run(command: str, env: dict[str, str]) -> str:
    """``distillgate <command>`` (paths in it have no spaces: they are this script's own)."""
    started = time.perf_counter()
    done = subprocess.run([*CLI, *command.split()], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{command} failed:\n{done.stdout}\n{done.stderr}")
    print(f"  distillgate {command}: {time.perf_counter() - started:.0f}s")
    return done.stdout


def task_file(tasks: Path, student: Path, calibrator: Path) -> None:
    tasks.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "tasks" / "banking77.toml").read_text()
    text = text.replace('student = "../models/banking77"', f'student = "{student}"')
    text = text.replace(
        'calibrator = "../models/banking77.calibration.json"', f'calibrator = "{calibrator}"'
    )
    text = text.replace('"../data/', f'"{DATA.parent}/')
    (tasks / "banking77.toml").write_text(text)


def serve_traffic(url: str, traffic: list[Example]) -> dict[str, float]:
    def one(ex: Example) -> tuple[str, bool]:
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "banking77", "messages": [{"role": "user", "content": ex.prompt}]},
            timeout=60,
        )
        r.raise_for_status()
        answer = r.json()["choices"][0]["message"]["content"]
        return r.headers["x-distillgate-route"], answer == ex.answer

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, traffic))
    accepted = [ok for route, ok in results if route == "student"]
    return {
        "requests": len(results),
        "escalation_rate": 1 - len(accepted) / len(results),
        "accepted_accuracy": sum(accepted) / len(accepted) if accepted else float("nan"),
        "routed_accuracy": sum(ok for _, ok in results) / len(results),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=float, default=300.0, help="training seconds per round")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "loop")
    p.add_argument(
        "--target-accuracy", type=float, default=0.95, help="accepted-answer accuracy target"
    )
    args = p.parse_args()
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    labels = sorted({e.answer for e in read_examples(DATA / "train.jsonl")})
    unseen = set(labels[::4])  # 20 of the 77 intents the weak student never sees
    weak_train = out / "weak-train.jsonl"
    write_examples(
        weak_train, [e for e in read_examples(DATA / "train.jsonl") if e.answer not in unseen]
    )
    live, fresh = stratified_split(read_examples(DATA / "test.jsonl"), fraction=0.5, seed=0)
    write_examples(out / "fresh.jsonl", fresh)

    redis = RedisServer(out / "redis")
    redis.start()
    env = {
        **os.environ,
        "DISTILLGATE_TASKS_DIR": str(out / "tasks"),
        "DISTILLGATE_REDIS_URL": redis.url,
        "DISTILLGATE_SPOOL_DIR": str(out / "spool"),
        "DISTILLGATE_ADMIN_KEY": ADMIN,
        "DISTILLGATE_LOG_LEVEL": "warning",
        "DISTILLGATE_BUILD_MISSING_STUDENTS": "false",
        "DISTILLGATE_PORT": "8765",
    }
    env.pop("ANTHROPIC_API_KEY", None)  # the simulator is the teacher
    budget = f"--time-budget {args.budget}"
    weak, weak_cal = out / "weak", out / "weak.calibration.json"
    print(f"weak student: {len(unseen)} of {len(labels)} intents held back")
    cal_data = DATA / "calibration.jsonl"
    task_file(out / "tasks", weak, weak_cal)
    run(
        f"student train --task banking77 --data {weak_train} --out {weak} {budget} "
        f"--held-out {cal_data}",
        env,
    )
    target = f"--target-accuracy {args.target_accuracy}"
    run(f"calibrate --task banking77 {target}", env)
    fresh_data = out / "fresh.jsonl"
    run(f"evaluate --task banking77 --data {fresh_data} --out {out}/fresh-before.json", env)

    gateway = subprocess.Popen([*CLI, "serve"], env=env)
    url = "http://127.0.0.1:8765"
    try:
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        before = serve_traffic(url, live)
        print("before:", json.dumps(before))
        time.sleep(2)  # audits finish in the background
        captured = out / "captured.jsonl"
        print(run(f"export --task banking77 --out {captured}", env))
        round1, round1_cal = out / "round1", out / "round1.calibration.json"
        run(
            f"student train --data {weak_train} --data {captured} --init-from {weak} "
            f"--out {round1} {budget} --held-out {cal_data}",
            env,
        )
        print(
            run(
                f"calibrate --task banking77 --student {round1} --from-stream "
                f"--data {cal_data} --out {round1_cal} {target}",
                env,
            )
        )
        task_file(out / "tasks", round1, round1_cal)
        r = httpx.post(
            f"{url}/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}, timeout=120
        )
        r.raise_for_status()
        after = serve_traffic(url, live)
        print("after:", json.dumps(after))
    finally:
        gateway.terminate()
        gateway.wait(60)
    run(f"evaluate --task banking77 --data {fresh_data} --out {out}/fresh-after.json", env)
    redis.stop()
    keys = ("escalation_rate", "accepted_accuracy", "routed_accuracy", "student_accuracy")
    fresh_before = json.loads((out / "fresh-before.json").read_text())
    fresh_after = json.loads((out / "fresh-after.json").read_text())
    summary = {
        "live traffic (served twice)": {"before": before, "after": after},
        "fresh half (never trained or calibrated on)": {
            "before": {k: fresh_before.get(k) for k in keys},
            "after": {k: fresh_after.get(k) for k in keys},
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
