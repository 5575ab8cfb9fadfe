"""What the dashboards show, as a PNG: a real Prometheus scraping the demo gateway under load.

No Grafana runs here, so this plots, with matplotlib, the same PromQL the dashboards use
(taken from ``deploy/grafana/dashboards/*.json``), over a few minutes of Banking77 traffic:
test-split prompts, some gibberish that should escalate, a share of streams.

    python deploy/snapshot.py [--seconds 120] [--out docs/img/dashboards.png]

Needs the demo student (``distillgate student build --task banking77``), redis-server and
prometheus on the PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.examples import read_examples  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

STEP = 2


def panels() -> dict[str, dict[str, str]]:
    """Panel title -> {legend: expr} from the dashboards, variables filled in."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            out[panel["title"]] = {
                t["legendFormat"]: t["expr"]
                .replace("$__rate_interval", "30s")
                .replace("$__range", "10m")
                .replace("$task", ".*")
                .replace("$instance", ".*")
                for t in panel["targets"]
            }
    return out


CHARTS = [
    ("Requests by route", "req/s"),
    ("Escalation rate vs calibrated expectation", "share"),
    ("Latency by route (non-streaming)", "seconds"),
    ("Live accuracy (audit agreement) vs target", "share"),
    ("Teacher spend (USD per hour)", "USD/h"),
    ("Captured records by outcome", "records/s"),
]


def wait(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not come up")


def load(url: str, seconds: float) -> None:
    prompts = [e.prompt or "" for e in read_examples(ROOT / "data/banking77/test.jsonl")]
    rng = random.Random(0)
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop:
                text = prompts[rng.randrange(len(prompts))]
                if rng.random() < 0.1:
                    text = " ".join(rng.sample(text.split(), len(text.split()))) + " zxqv"
                body = {
                    "model": "banking77",
                    "messages": [{"role": "user", "content": text}],
                    "stream": rng.random() < 0.2,
                }
                http.post(f"{url}/v1/chat/completions", json=body).read()
                time.sleep(rng.random() * 0.2)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def query_range(prom: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{prom}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": STEP},
        timeout=30,
    )
    return r.json()["data"]["result"]  # type: ignore[no-any-return]


def label(legend: str, metric: dict[str, str]) -> str:
    for key, value in metric.items():
        legend = legend.replace("{{" + key + "}}", value)
    return legend


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboards.png")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="snapshot-"))
    redis = RedisServer(work / "redis")
    redis.start()
    port, prom_port = free_port(), free_port()
    env = {
        **os.environ,
        "DISTILLGATE_PORT": str(port),
        "DISTILLGATE_REDIS_URL": redis.url,
        "DISTILLGATE_SPOOL_DIR": str(work / "spool"),
        "DISTILLGATE_LOG_LEVEL": "warning",
        "DISTILLGATE_BUILD_MISSING_STUDENTS": "false",
    }
    env.pop("ANTHROPIC_API_KEY", None)
    gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], cwd=ROOT, env=env)
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: distillgate\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prom = f"http://127.0.0.1:{prom_port}"
    try:
        wait(f"http://127.0.0.1:{port}/readyz")
        wait(f"{prom}/-/ready")
        start = time.time()
        load(f"http://127.0.0.1:{port}", args.seconds)
        time.sleep(3)
        end = time.time()
        exprs = panels()
        fig, axes = plt.subplots(3, 2, figsize=(13, 11))
        for ax, (title, unit) in zip(axes.flat, CHARTS, strict=True):
            for legend, expr in exprs[title].items():
                for series in query_range(prom, expr, start, end):
                    xs = [float(t) - start for t, _ in series["values"]]
                    ys = [float(v) for _, v in series["values"]]
                    ax.plot(xs, ys, label=label(legend, series["metric"]))
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("seconds")
            ax.set_ylabel(unit)
            ax.legend(fontsize=7, loc="best")
            ax.grid(alpha=0.3)
        fig.suptitle(
            f"distillgate, Banking77 demo: {args.seconds:.0f} s of traffic from 8 clients, "
            "scraped by Prometheus every second (the dashboards' queries)",
            fontsize=11,
        )
        fig.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=90)
        print(f"wrote {args.out}")
    finally:
        gateway.terminate()
        gateway.wait(60)
        prometheus.terminate()
        prometheus.wait(30)
        redis.stop()


if __name__ == "__main__":
    main()
