"""The demo as a user lives it: the real `distillgate serve` from a fresh state (both demo
tasks, no student, no Redis: the README's first command), steady Banking77 traffic from
several clients, and the loop training by itself.

Phases, side by side in one run:
1. **teacher only, a round training**: from the start until the first Banking77 student
   serves (the timeline gives the time to it);
2. **student, a round training**: the next round (the other task's first) trains beside the
   student for ``--window`` seconds;
3. **no traffic, a round training**: the clients pause, so the trainer's speed with no
   traffic is measured on the same round;
4. **student, nothing training**: the loop's processes are stopped (SIGSTOP) for ``--window``
   seconds and the same traffic is served; then they continue (SIGCONT);
5. **student, a round training** again, so drift in the machine's load shows.

Per phase: latency p50/p95/p99 of the answers, the serve process's CPU (cores) and the
trainer's steps per second (from its log). Ratios: the student's p50/p95 while a round
trains over nothing training, and the trainer's step time with traffic over without.

    python benchmarks/demo_beside_training.py [--rate 3] [--clients 4] [--window 180]
        [--max-minutes 40] [--seed 0] [--out reports/demo-beside-training]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.examples import read_examples  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    t: float  # seconds since serve started
    latency_s: float
    status: int
    route: str
    version: str
    phase: str


def fresh_tasks(work: Path) -> Path:
    """The demo's task files, pointing at a fresh state in ``work`` (nothing else changed)."""
    tasks = work / "tasks"
    tasks.mkdir(parents=True)
    for name in ("banking77", "snips"):
        text = (ROOT / "tasks" / f"{name}.toml").read_text()
        swaps = {
            f'student = "../models/{name}"': f'student = "{work / "models" / name}"',
            f'calibrator = "../models/{name}.calibration.json"': (
                f'calibrator = "{work / "models" / name}.calibration.json"'
            ),
            'registry = "../registry"': f'registry = "{work / "registry"}"',
        }
        for old, new in swaps.items():
            assert old in text, f"tasks/{name}.toml no longer has {old!r}"
            text = text.replace(old, new)
        text = text.replace('"../data/', f'"{ROOT / "data"}/').replace(
            'answer_schema_file = "snips.schema.json"',
            f'answer_schema_file = "{ROOT / "tasks" / "snips.schema.json"}"',
        )
        (tasks / f"{name}.toml").write_text(text)
    return tasks


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def trainer_step(registry: Path) -> tuple[str, int] | None:
    """(log, step) of the newest round's training log, None before any."""
    logs = sorted(registry.glob("*/staging/*/round/train.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return None
    tail = logs[-1].read_bytes()[-4000:].decode(errors="replace")
    steps = re.findall(r"step (\d+)", tail)
    return str(logs[-1]), int(steps[-1]) if steps else 0


def trainer_running(serve: int) -> bool:
    for pid in descendants(serve):
        try:
            if b"student\x00train" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


class Clients:
    """``n`` clients, each sending Banking77 prompts at ``rate / n`` a second, while on."""

    def __init__(self, url: str, prompts: list[str], rate: float, n: int, started: float):
        self.url, self.prompts, self.rate, self.n = url, prompts, rate, n
        self.started, self.rows, self.on, self.phase = started, [], threading.Event(), ""
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(i,)) for i in range(n)]

    def client(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            beat, k = time.perf_counter(), i
            while not self.done.is_set():
                beat += self.n / self.rate
                time.sleep(max(0.0, beat - time.perf_counter()))
                if not self.on.is_set():
                    beat = time.perf_counter()
                    continue
                prompt = self.prompts[k % len(self.prompts)]
                k += self.n
                sent, phase = time.perf_counter(), self.phase
                try:
                    r = http.post(
                        "/v1/chat/completions",
                        json={
                            "model": "banking77",
                            "messages": [{"role": "user", "content": prompt}],
                        },
                    )
                    route = r.headers.get("x-distillgate-route", "")
                    version = r.headers.get("x-distillgate-student", "")
                    status = r.status_code
                except httpx.HTTPError:
                    route, version, status = "", "", 0
                row = Row(
                    round(sent - self.started, 2),
                    time.perf_counter() - sent,
                    status,
                    route,
                    version,
                    phase,
                )
                with self.lock:
                    self.rows.append(row)


def summary(rows: list[Row], phase: str, route: str | None = None) -> dict[str, object]:
    """Latency of the phase's answers (``route``: only those it answered)."""
    rows = [r for r in rows if route is None or r.route == route]
    xs = sorted(r.latency_s for r in rows if r.phase == phase and r.status == 200)
    if not xs:
        return {"requests": 0}
    pick = lambda q: round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 1)  # noqa: E731
    routes = [r.route for r in rows if r.phase == phase and r.status == 200]
    return {
        "requests": len(xs),
        "errors": sum(1 for r in rows if r.phase == phase and r.status != 200),
        "p50_ms": round(1000 * statistics.median(xs), 1),
        "p95_ms": pick(0.95),
        "p99_ms": pick(0.99),
        "student_share": round(routes.count("student") / len(routes), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=float, default=3.0, help="requests per second, all clients")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--window", type=float, default=180.0, help="seconds per measured phase")
    p.add_argument("--max-minutes", type=float, default=40.0)
    p.add_argument("--port", type=int, default=8779)
    p.add_argument("--seed", type=int, default=0, help="the order the test prompts are sent in")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "demo-beside-training")
    args = p.parse_args()
    work: Path = args.out
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "DISTILLGATE_TASKS_DIR": str(fresh_tasks(work)),
        "DISTILLGATE_REDIS_URL": "redis://127.0.0.1:1/0",  # no Redis server: the spool
        "DISTILLGATE_SPOOL_DIR": str(work / "spool"),
        "DISTILLGATE_PORT": str(args.port),
    }
    env.pop("ANTHROPIC_API_KEY", None)  # the simulator is the teacher
    env.pop("DISTILLGATE_TORCH_THREADS", None)
    prompts = [e.prompt or "" for e in read_examples(ROOT / "data" / "banking77" / "test.jsonl")]
    # The test file is sorted by intent: shuffled, every phase sees the same mix of intents
    # (and so the same share escalated).
    random.Random(args.seed).shuffle(prompts)
    log = (work / "serve.log").open("wb")
    started = time.perf_counter()
    serve = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{args.port}"
    clients = Clients(url, prompts, args.rate, args.clients, started)
    samples: list[dict[str, object]] = []
    events: dict[str, float] = {}

    def sample() -> dict[str, object]:
        kids = descendants(serve.pid)
        step = trainer_step(work / "registry")
        row = {
            "t": round(time.perf_counter() - started, 1),
            "phase": clients.phase,
            "serve_cpu_s": cpu_seconds(serve.pid),
            "children_cpu_s": sum(cpu_seconds(k) for k in kids),
            "trainer_log": step[0] if step else None,
            "trainer_step": step[1] if step else None,
        }
        samples.append(row)
        return row

    def hold(phase: str, seconds: float, traffic: bool = True) -> None:
        clients.phase = phase
        (clients.on.set if traffic else clients.on.clear)()
        end = time.perf_counter() + seconds
        sample()
        while time.perf_counter() < end:
            time.sleep(min(5.0, max(0.0, end - time.perf_counter())))
            sample()
        clients.phase = ""

    deadline = started + 60 * args.max_minutes
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            while True:
                try:
                    if http.get("/v1/models").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            events["serving_s"] = time.perf_counter() - started
            clients.phase = "teacher only"
            clients.on.set()
            for thread in clients.threads:
                thread.start()

            def version() -> str:
                data = http.get("/v1/models").json()["data"]
                return {m["id"]: str(m["student_version"]) for m in data}["banking77"]

            while version() == "none":  # phase 1
                assert time.perf_counter() < deadline, "no first student in time"
                sample()
                time.sleep(5)
            events["first_student_s"] = time.perf_counter() - started
            print(f"first banking77 student after {events['first_student_s']:.0f} s", flush=True)
            clients.phase = "student, between rounds"
            while not trainer_running(serve.pid):
                assert time.perf_counter() < deadline, "no next round in time"
                time.sleep(2)
            time.sleep(20)  # past the tokenizer, into the steps
            hold("student, a round training", args.window)
            hold("no traffic, a round training", args.window, traffic=False)
            stopped = descendants(serve.pid)
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            try:
                hold("student, nothing training", args.window)
            finally:
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
            hold("student, a round training (again)", args.window)
    finally:
        clients.done.set()
        for thread in clients.threads:
            if thread.is_alive():
                thread.join(70)
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(60)
    rows = sorted(clients.rows, key=lambda r: r.t)
    phases = [
        "teacher only",
        "student, a round training",
        "student, nothing training",
        "student, a round training (again)",
    ]
    report: dict[str, object] = {"events_s": {k: round(v, 1) for k, v in events.items()}}
    report["latency"] = {ph: summary(rows, ph) for ph in phases}
    # Escalated and accepted requests differ in cost: per route too.
    report["latency_by_route"] = {
        ph: {route: summary(rows, ph, route) for route in ("student", "teacher")}
        for ph in phases[1:]
    }
    rates: dict[str, dict[str, float]] = {}
    for ph in [*phases[1:], "no traffic, a round training"]:
        span = [s for s in samples if s["phase"] == ph]
        if len(span) < 2:
            continue
        seconds = float(span[-1]["t"]) - float(span[0]["t"])  # type: ignore[arg-type]
        one_log = span[0]["trainer_log"] == span[-1]["trainer_log"]
        steps = (
            int(span[-1]["trainer_step"]) - int(span[0]["trainer_step"])  # type: ignore[call-overload]
            if one_log and span[0]["trainer_step"] is not None
            else None
        )
        rates[ph] = {
            "serve_cpu_cores": round(
                (float(span[-1]["serve_cpu_s"]) - float(span[0]["serve_cpu_s"])) / seconds,
                3,  # type: ignore[arg-type]
            ),
            "trainer_steps_per_s": round(steps / seconds, 3) if steps is not None else None,  # type: ignore[dict-item]
        }
    report["cpu_and_training"] = rates
    lat = report["latency"]
    assert isinstance(lat, dict)
    busy, alone = lat["student, a round training"], lat["student, nothing training"]
    if busy.get("requests") and alone.get("requests"):
        report["ratios"] = {
            "student_p50_training_over_alone": round(busy["p50_ms"] / alone["p50_ms"], 2),
            "student_p95_training_over_alone": round(busy["p95_ms"] / alone["p95_ms"], 2),
        }
    quiet = rates.get("no traffic, a round training", {}).get("trainer_steps_per_s")
    loaded = rates.get("student, a round training", {}).get("trainer_steps_per_s")
    if quiet and loaded:
        report.setdefault("ratios", {})["trainer_time_traffic_over_none"] = round(  # type: ignore[union-attr]
            quiet / loaded, 2
        )
    rounds = []
    for path in sorted((work / "registry").glob("*/rounds.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("outcome") != "skipped":
                rounds.append(
                    {k: r.get(k) for k in ("task", "trigger", "outcome", "reason", "seconds")}
                )
    report["rounds"] = rounds
    report["settings"] = {k: str(v) for k, v in vars(args).items()}
    (work / "rows.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in rows))
    (work / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (work / "summary.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
