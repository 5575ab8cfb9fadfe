"""Run a locust scenario headless and write its reports and a summary.

    python loadtests/run.py --host http://127.0.0.1:8000 [--users 16] [--spawn-rate 4]
        [--duration 60s] [--out reports/load] [--workers N [--expect-workers M]]

``--workers N`` runs locust's own distributed mode: this process starts a master and N local
workers; with ``--expect-workers M`` > N the master also waits for M - N workers started on
other machines (``locust -f loadtests/locustfile.py --worker --master-host THIS_HOST
--master-port PORT``). Workers send their samples to the master, which writes the one set of
CSVs the summary reads, so the summary is the same shape however many generators ran.

Writes ``locust_stats.csv`` (and locust's other CSVs), ``report.html`` and ``summary.md``:
requests, failures, throughput and latency per endpoint, the route split and latency per
route, time to first token. Exits non-zero when any request failed.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def summarise(stats_csv: Path) -> tuple[str, int]:
    rows = list(csv.DictReader(stats_csv.open()))
    http = [r for r in rows if r["Type"] in ("POST", "GET") and r["Name"] != "Aggregated"]
    routes = [r for r in rows if r["Type"] == "route"]
    requests = sum(int(r["Request Count"]) for r in http)
    failures = sum(int(r["Failure Count"]) for r in http)
    answered = sum(int(r["Request Count"]) for r in routes) or 1

    def table(selected: list[dict[str, str]], first: str) -> list[str]:
        out = [f"| {first} | requests | failures | req/s | p50 ms | p95 ms | p99 ms |"]
        out.append("| --- | --- | --- | --- | --- | --- | --- |")
        for r in selected:
            out.append(
                f"| {r['Name']} | {r['Request Count']} | {r['Failure Count']} "
                f"| {float(r['Requests/s']):.1f} | {r['50%']} | {r['95%']} | {r['99%']} |"
            )
        return out

    lines = ["# Load test summary", ""]
    lines += [*table(http, "endpoint"), ""]
    lines += ["Route split (share of answered requests) and latency per route:", ""]
    lines += [*table(routes, "route"), ""]
    lines += [f"- {r['Name']}: {int(r['Request Count']) / answered:.1%} of answers" for r in routes]
    ttft = [r for r in rows if r["Type"] == "stream"]
    if ttft:
        lines += ["", f"Time to first token: p50 {ttft[0]['50%']} ms, p95 {ttft[0]['95%']} ms."]
    lines += ["", f"Total: {requests} requests, {failures} failures."]
    return "\n".join(lines) + "\n", failures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", required=True)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--spawn-rate", type=float, default=4)
    p.add_argument("--duration", default="60s")
    p.add_argument("--out", type=Path, default=Path("reports/load"))
    p.add_argument("--workers", type=int, default=0, help="local locust workers (0: one process)")
    p.add_argument("--expect-workers", type=int, help="workers to wait for, remote ones included")
    p.add_argument("--master-port", type=int, default=5557)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    locust = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py")]
    distributed: list[str] = []
    workers: list[subprocess.Popen[bytes]] = []
    if args.workers:
        expect = max(args.expect_workers or args.workers, args.workers)
        distributed = ["--master", "--expect-workers", str(expect),
                       "--master-bind-port", str(args.master_port)]  # fmt: skip
        worker = [*locust, "--worker", "--master-host", "127.0.0.1",
                  "--master-port", str(args.master_port)]  # fmt: skip
        workers = [subprocess.Popen(worker) for _ in range(args.workers)]
    command = [
        *locust,
        *distributed,
        "--headless", "--only-summary",
        "--host", args.host,
        "--users", str(args.users),
        "--spawn-rate", str(args.spawn_rate),
        "--run-time", args.duration,
        "--csv", str(args.out / "locust"),
        "--html", str(args.out / "report.html"),
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    try:
        done = subprocess.run(command)
    finally:
        for w in workers:
            try:
                w.wait(timeout=30)  # the master tells them to quit at the end
            except subprocess.TimeoutExpired:
                w.kill()
    if done.returncode != 0:
        raise SystemExit(f"locust exited with {done.returncode}")
    summary, failures = summarise(args.out / "locust_stats.csv")
    (args.out / "summary.md").write_text(summary)
    print(summary)
    if failures:
        raise SystemExit(f"{failures} requests failed")


if __name__ == "__main__":
    main()
