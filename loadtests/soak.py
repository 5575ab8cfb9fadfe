"""A bounded soak: steady load on ``distillgate serve`` (the demo student) for many minutes,
with Redis killed and restarted and the teacher failing on a schedule. Not in CI.

    python -m loadtests.soak [--minutes 10] [--clients 8] [--rate 40] [--out reports/soak]

Real processes throughout: ``redis-server``, the teacher simulator (``distillgate
teacher-sim``, faults armed over its HTTP API) and the gateway. Clients send Banking77 test
prompts (one in five streamed) at a paced ``--rate``. Every ``--fault-every`` seconds the
next fault in the cycle starts: Redis killed for 20 s; 40 teacher 500s; 10 hanging
teacher calls; 30 teacher replies that are not the protocol's.

Reports per minute: requests, errors by status, latency percentiles, the route split and
the gateway's RSS; and at the end, whether every escalation answered reached the Redis
stream (after the spool replays), and the RSS at the first full minute vs the last.
Writes ``summary.md`` and ``soak.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import redis

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "banking77"
STREAM = "distillgate:{soak}:capture"
FAULTS = ("redis", "teacher-500", "teacher-hang", "teacher-garbage")


@dataclass
class Sample:
    at: float
    latency_ms: float
    status: int  # 0: no HTTP answer at all
    route: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_task(folder: Path, teacher_url: str) -> None:
    models = ROOT / "models"
    (folder / "soak.toml").write_text(
        f'student = "{models / "banking77"}"\n'
        f'calibrator = "{models / "banking77.calibration.json"}"\n'
        f'answers_file = "{DATA / "categories.json"}"\n'
        "[generation]\nmax_tokens = 24\n"
        "[limits]\ndeadline_s = 10\n"
        "[capture]\naudit_rate = 0\n"  # every captured record is an escalation: countable
        f'[teacher]\nbase_url = "{teacher_url}"\napi_key_env = "SOAK_TEACHER_KEY"\n'
        "timeout_s = 2\ndeadline_s = 4\nmax_attempts = 2\n"
    )


class Redis:
    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "yes",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def client_loop(
    url: str, prompts: list[str], interval: float, until: float, out: list[Sample]
) -> None:
    rng = random.Random()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        next_at = time.monotonic() + rng.random() * interval
        while next_at < until:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            stream = rng.random() < 0.2
            body = {
                "model": "soak",
                "messages": [{"role": "user", "content": rng.choice(prompts)}],
                "stream": stream,
            }
            started = time.monotonic()
            try:
                async with session.post(f"{url}/v1/chat/completions", json=body) as r:
                    await r.read()
                    route = r.headers.get("x-distillgate-route", "none")
                    status = r.status
            except (aiohttp.ClientError, TimeoutError):
                status, route = 0, "none"
            out.append(Sample(started, (time.monotonic() - started) * 1000, status, route))


async def faults(sim: str, redis_server: Redis, every: float, until: float, log: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for n in range(10_000):
            await asyncio.sleep(every)
            if time.monotonic() > until - 30:
                return
            fault = FAULTS[n % len(FAULTS)]
            log.append(f"{time.strftime('%H:%M:%S')} {fault}")
            if fault == "redis":
                redis_server.kill()
                await asyncio.sleep(20)
                redis_server.start()
            else:
                mode, count = {"teacher-500": ("500", 40), "teacher-hang": ("timeout", 10)}.get(
                    fault, ("garbage", 30)
                )
                await session.post(f"{sim}/sim/faults", json={"mode": mode, "count": count})


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")


def minute_rows(
    samples: list[Sample], t0: float, minutes: float, rss: dict[int, float]
) -> list[dict[str, object]]:
    last = max(0, int(minutes * 60 - 1) // 60)  # stragglers started after the end count there

    def minute_of(s: Sample) -> int:
        return min(int((s.at - t0) // 60), last)

    rows = []
    for minute in range(last + 1):
        mine = [s for s in samples if minute_of(s) == minute]
        if not mine:
            continue
        ok = [s.latency_ms for s in mine if s.status == 200]
        errors: dict[str, int] = {}
        for s in mine:
            if s.status != 200:
                errors[str(s.status)] = errors.get(str(s.status), 0) + 1
        routes: dict[str, int] = {}
        for s in mine:
            routes[s.route] = routes.get(s.route, 0) + 1
        rows.append(
            {
                "minute": minute + 1,
                "requests": len(mine),
                "errors": errors,
                "p50_ms": percentile(ok, 50),
                "p95_ms": percentile(ok, 95),
                "p99_ms": percentile(ok, 99),
                "routes": routes,
                "rss_mb": rss.get(minute, float("nan")),
            }
        )
    return rows


def markdown(
    rows: list[dict[str, object]], totals: dict[str, object], faults_log: list[str]
) -> str:
    out = [
        "| minute | requests | errors | p50 ms | p95 ms | p99 ms | teacher / fallback | RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        routes = r["routes"]
        assert isinstance(routes, dict)
        errors = r["errors"]
        assert isinstance(errors, dict)
        out.append(
            f"| {r['minute']} | {r['requests']} | "
            f"{', '.join(f'{k}: {v}' for k, v in errors.items()) or 0} | "
            f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{routes.get('teacher', 0)} / {routes.get('student-fallback', 0)} | "
            f"{r['rss_mb']:.0f} |"
        )
    out += ["", "```", json.dumps(totals, indent=2), "```", "", "Faults:", ""]
    out += [f"- {line}" for line in faults_log]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rate", type=float, default=40.0, help="requests per second, all clients")
    p.add_argument("--fault-every", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "soak")
    args = p.parse_args()
    if not (ROOT / "models" / "banking77" / "config.json").is_file():
        sys.exit("the demo student is missing: run `distillgate serve` once to build it")

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    (work / "tasks").mkdir()
    (work / "redis").mkdir()
    redis_server = Redis(free_port(), work / "redis")
    redis_server.start()
    sim_port, port = free_port(), free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "teacher-sim", "--data", str(DATA / "test.jsonl"),
         "--port", str(sim_port), "--latency-ms", "50"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    sim_url = f"http://127.0.0.1:{sim_port}"
    write_task(work / "tasks", sim_url)
    env = {
        **os.environ,
        "DISTILLGATE_TASKS_DIR": str(work / "tasks"),
        "DISTILLGATE_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "DISTILLGATE_SPOOL_DIR": str(work / "spool"),
        "DISTILLGATE_PORT": str(port),
        "DISTILLGATE_BUILD_MISSING_STUDENTS": "false",
        "SOAK_TEACHER_KEY": "soak",
    }
    gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    prompts = [json.loads(line)["prompt"] for line in (DATA / "test.jsonl").open()]
    samples: list[Sample] = []
    rss: dict[int, float] = {}
    faults_log: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or gateway.poll() is not None:
                raise SystemExit("the gateway did not start")
            time.sleep(0.2)
        t0 = time.monotonic()
        until = t0 + args.minutes * 60
        interval = args.clients / args.rate

        async def run() -> None:
            async def watch_rss() -> None:
                while time.monotonic() < until:
                    rss[int((time.monotonic() - t0) // 60)] = rss_mb(gateway.pid)
                    await asyncio.sleep(5)

            await asyncio.gather(
                watch_rss(),
                faults(sim_url, redis_server, args.fault_every, until, faults_log),
                *(client_loop(url, prompts, interval, until, samples) for _ in range(args.clients)),
            )

        asyncio.run(run())
        escalated = sum(1 for s in samples if s.route in ("teacher", "student-fallback"))
        store = redis.Redis(port=redis_server.port)
        settle = time.monotonic() + 60
        while store.xlen(STREAM) < escalated and time.monotonic() < settle:
            time.sleep(0.5)
        captured = store.xlen(STREAM)
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            exit_code: int | None = gateway.wait(timeout=60)
        except subprocess.TimeoutExpired:
            exit_code = None
            gateway.kill()
        sim.kill()  # it may hold 'hanging' teacher calls; nothing of it is measured
        redis_server.kill()
        shutil.rmtree(work, ignore_errors=True)

    rows = minute_rows(samples, t0, args.minutes, rss)
    ok = [s.latency_ms for s in samples if s.status == 200]
    totals = {
        "minutes": args.minutes,
        "requests": len(samples),
        "answered_200": len(ok),
        "errors": len(samples) - len(ok),
        "p50_ms": round(percentile(ok, 50), 1),
        "p95_ms": round(percentile(ok, 95), 1),
        "p99_ms": round(percentile(ok, 99), 1),
        "escalations_answered": escalated,
        "records_in_redis": captured,
        "records_lost": escalated - captured,
        "rss_mb_first_full_minute": round(rss.get(1, float("nan")), 1),
        "rss_mb_last_minute": round(rss.get(max(rss), float("nan")), 1),
        "gateway_exit_after_sigterm": exit_code,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    report = markdown(rows, totals, faults_log)
    (args.out / "summary.md").write_text(report)
    payload = {"totals": totals, "minutes": rows, "faults": faults_log}
    (args.out / "soak.json").write_text(json.dumps(payload, indent=2))
    (args.out / "samples.json").write_text(json.dumps([asdict(s) for s in samples]))
    print(report)


if __name__ == "__main__":
    main()
