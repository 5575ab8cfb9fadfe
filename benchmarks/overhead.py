"""Gateway overhead, side by side: distillgate and its peers in front of one fake upstream.

Targets (each its own process, started once, then measured in interleaved rounds):

- ``direct``: the fake upstream itself (``upstream.py``), the floor of every latency;
- ``distillgate``: the gateway with the upstream as its remote student
  (``[engine] kind = "remote"``), computing the calibrated confidence from top-20
  logprobs, routing, metrics; every answer accepted (no teacher);
- ``distillgate-httpx``: the same with httpx as the upstream client;
- ``fastapi-httpx`` / ``fastapi-aiohttp``: bare FastAPI pass-throughs (``passthrough.py``);
- ``litellm``: LiteLLM's proxy, when a ``litellm`` executable is found (``--litellm``);
- ``distillgate-traced`` / ``distillgate-traced-1pct`` (``--variants traced``): the gateway
  exporting OTLP traces (to the upstream, which accepts them) of every request / of 1 %.

Load comes from ``wrk`` (one thread, a Lua body script) at 1, 16 and 64 connections. Per
run: req/s, p50/p90/p99 latency (wrk's), the p50 added over ``direct`` in the same round,
and the target's CPU time per request (utime + stime of its process tree from /proc).
With two or more cores, targets run on core 0 and wrk plus the upstream on core 1, so a
target's CPU is its own. Medians over rounds; ratios against the bare pass-throughs.

    python -m benchmarks.overhead [--rounds 3] [--duration 5] [--out reports/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from calibration import Calibration, save_calibration, student_fingerprint

ROOT = Path(__file__).resolve().parents[1]
BODY = {
    "model": "banking77",
    "messages": [{"role": "user", "content": "I am still waiting on my card, is it lost?"}],
    "max_tokens": 24,
    "temperature": 0,
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    name: str
    command: list[str]
    port: int
    env: dict[str, str]
    ready_path: str = "/health"
    process: subprocess.Popen[bytes] | None = None
    cwd: Path = ROOT

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Run:
    round: int
    target: str
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_request: float
    added_p50_ms: float | None = None


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += (int(stats[p][11]) + int(stats[p][12])) / CLK_TCK
        todo.extend(children.get(p, []))
    return total


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def parse_wrk(output: str) -> dict[str, float]:
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+([\d.]+\w+)", output, re.M))
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return {
        "requests": requests,
        "rps": rps,
        "p50_ms": _ms(pct["50"]),
        "p90_ms": _ms(pct["90"]),
        "p99_ms": _ms(pct["99"]),
        "errors": errors,
    }


def _pinned(command: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu is not None else command


def wrk(url: str, connections: int, duration: float, script: Path, cpu: str | None) -> str:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{round(duration)}s",
        "--latency",
        "-s",
        str(script),
    ]
    done = subprocess.run(
        _pinned([*command, f"{url}/v1/chat/completions"], cpu),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def measure(
    target: Target, connections: int, duration: float, script: Path, cpu: str | None, rnd: int
) -> Run:
    assert target.process is not None
    before = _tree_cpu_s(target.process.pid)
    figures = parse_wrk(wrk(target.url, connections, duration, script, cpu))
    cpu_s = _tree_cpu_s(target.process.pid) - before
    return Run(
        round=rnd,
        target=target.name,
        connections=connections,
        cpu_ms_per_request=1000 * cpu_s / max(1, figures["requests"]),
        **{k: v for k, v in figures.items()},  # type: ignore[arg-type]
    )


def _wait_ready(target: Target, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert target.process is not None
        if target.process.poll() is not None:
            raise SystemExit(f"{target.name} exited with {target.process.returncode}")
        try:
            if httpx.get(target.url + target.ready_path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{target.name} did not become ready")


def _distillgate_task(folder: Path, upstream: str, client: str, top_k: int = 20) -> Path:
    """A task whose student is the fake upstream, with a calibrator so the confidence is
    computed as in production (T from the demo student; the threshold does not matter:
    without a teacher every answer is the student's)."""
    student = folder / "student"  # stands for the model the fleet serves (fingerprint only)
    student.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (student / name).write_text("{}")
    save_calibration(
        Calibration(
            temperature=1.14, threshold=0.9, student_fingerprint=student_fingerprint(student)
        ),
        folder / "calibration.json",
    )
    tasks = folder / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "banking77.toml").write_text(
        f'student = "{student}"\ncalibrator = "{folder / "calibration.json"}"\n'
        f'answers = ["card_arrival", "lost_or_stolen_card"]\n'
        f'[engine]\nkind = "remote"\nbase_url = "{upstream}/v1"\nclient = "{client}"\n'
        f"confidence_top_k = {top_k}\n[generation]\nmax_tokens = 24\n"
    )
    return tasks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def targets(
    work: Path,
    upstream: str,
    litellm: str | None,
    variants: list[str],
    baseline: Path | None = None,
) -> list[Target]:
    """``variants`` adds gateway variants: ``httpx`` (httpx as the fleet client), ``top1``
    (confidence from the top-1 logprob only, to price reading the fleet's top-20),
    ``traced`` (OTLP traces of every request, and of 1 %).
    ``baseline``: another checkout of distillgate (``git worktree add DIR REF``), served as
    ``distillgate-baseline`` beside this one, so a change is priced side by side."""
    py = sys.executable
    quiet = {"DISTILLGATE_LOG_LEVEL": "warning", "DISTILLGATE_REDIS_URL": ""}

    def gateway(name: str, client: str, top_k: int) -> Target:
        port = free_port()
        tasks = _distillgate_task(work / name, upstream, client, top_k)
        env = {**quiet, "DISTILLGATE_PORT": str(port), "DISTILLGATE_TASKS_DIR": str(tasks)}
        return Target(name, [py, "-m", "gateway.cli", "serve"], port, env, ready_path="/readyz")

    def baseline_gateway(where: Path) -> Target:
        t = gateway("distillgate-baseline", "aiohttp", 20)
        t.cwd, t.env = where, {**t.env, "PYTHONPATH": str(where)}
        return t

    out = [
        Target("direct", [], int(upstream.rsplit(":", 1)[1]), {}),
        gateway("distillgate", "aiohttp", 20),
    ]
    if baseline is not None:
        out.append(baseline_gateway(baseline))
    if "httpx" in variants:
        out.append(gateway("distillgate-httpx", "httpx", 20))
    if "top1" in variants:
        out.append(gateway("distillgate-top1", "aiohttp", 1))
    if "traced" in variants:
        for name, rate in (("distillgate-traced", "1.0"), ("distillgate-traced-1pct", "0.01")):
            t = gateway(name, "aiohttp", 20)
            tracing = {"DISTILLGATE_OTLP_ENDPOINT": upstream, "DISTILLGATE_TRACE_SAMPLE_RATE": rate}
            t.env = {**t.env, **tracing}
            out.append(t)
    for client in ("httpx", "aiohttp"):
        port = free_port()
        out.append(
            Target(
                f"fastapi-{client}",
                [
                    py,
                    "-m",
                    "benchmarks.passthrough",
                    "--client",
                    client,
                    "--upstream",
                    upstream,
                    "--port",
                    str(port),
                ],
                port,
                {},
                ready_path="/docs",
            )
        )
    if litellm:
        litellm_port = free_port()
        config = work / "litellm.yaml"
        config.write_text(
            "model_list:\n  - model_name: banking77\n    litellm_params:\n"
            f"      model: openai/banking77\n      api_base: {upstream}/v1\n      api_key: fake\n"
        )
        out.append(
            Target(
                "litellm",
                [
                    litellm,
                    "--config",
                    str(config),
                    "--port",
                    str(litellm_port),
                    "--num_workers",
                    "1",
                ],
                litellm_port,
                {
                    "LITELLM_LOG": "ERROR",
                    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
                },
                ready_path="/health/liveliness",
            )
        )
    return out


def summarize(runs: list[Run]) -> list[dict[str, float | str | int]]:
    rows = []
    keys = sorted({(r.target, r.connections) for r in runs}, key=lambda k: (k[1], k[0]))
    for target, conns in keys:
        mine = [r for r in runs if r.target == target and r.connections == conns]

        def med(field: str, mine: list[Run] = mine) -> float:
            values = [getattr(r, field) for r in mine if getattr(r, field) is not None]
            return statistics.median(values) if values else float("nan")

        rows.append(
            {
                "target": target,
                "connections": conns,
                "rps": med("rps"),
                "p50_ms": med("p50_ms"),
                "p90_ms": med("p90_ms"),
                "p99_ms": med("p99_ms"),
                "added_p50_ms": med("added_p50_ms"),
                "cpu_ms_per_request": med("cpu_ms_per_request"),
                "errors": sum(r.errors for r in mine),
                "rounds": len(mine),
            }
        )
    return rows


def table(rows: list[dict[str, float | str | int]]) -> str:
    lines = [
        "| connections | target | req/s | p50 ms | p90 ms | p99 ms | added p50 ms "
        "| CPU ms/req | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        added = "" if r["target"] == "direct" else f"{r['added_p50_ms']:.3f}"
        cpu = "" if r["target"] == "direct" else f"{r['cpu_ms_per_request']:.3f}"
        lines.append(
            f"| {r['connections']} | {r['target']} | {r['rps']:.0f} | {r['p50_ms']:.3f} | "
            f"{r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {added} | {cpu} | {r['errors']} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict[str, float | str | int]]) -> str:
    """distillgate against each bare pass-through: < 1 is cheaper/faster for distillgate."""
    by = {(r["target"], r["connections"]): r for r in rows}
    lines = []
    for peer in ("distillgate-baseline", "fastapi-httpx", "fastapi-aiohttp", "litellm"):
        for conns in sorted({int(r["connections"]) for r in rows}):
            d, p = by.get(("distillgate", conns)), by.get((peer, conns))
            if d is None or p is None:
                continue
            cpu = float(d["cpu_ms_per_request"]) / float(p["cpu_ms_per_request"])
            added = float(d["added_p50_ms"]) / max(1e-9, float(p["added_p50_ms"]))
            rps = float(d["rps"]) / float(p["rps"])
            lines.append(
                f"distillgate / {peer} @ {conns}: CPU/req {cpu:.2f}x, "
                f"added p50 {added:.2f}x, req/s {rps:.2f}x"
            )
    return "\n".join(lines)


def chart(rows: list[dict[str, float | str | int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    names = list(dict.fromkeys(str(r["target"]) for r in rows))
    colours = {name: f"C{i}" for i, name in enumerate(names)}  # one colour per target
    for name in names:
        mine = sorted((r for r in rows if r["target"] == name), key=lambda r: r["connections"])
        x = [r["connections"] for r in mine]
        style = {"marker": "o", "label": name, "color": colours[name]}
        left.plot(x, [r["rps"] for r in mine], **style)
        middle.plot(x, [r["p50_ms"] for r in mine], **style)
        if name != "direct":  # the upstream's own CPU is not a gateway's
            right.plot(x, [r["cpu_ms_per_request"] for r in mine], **style)
    for ax, title in (
        (left, "throughput (req/s)"),
        (middle, "p50 latency (ms)"),
        (right, "server CPU per request (ms)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("connections (wrk)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in (left, middle, right):
        ax.set_yscale("log")
    left.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--litellm", default=shutil.which("litellm"), help="litellm executable")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        choices=["httpx", "top1", "traced"],
        help="also distillgate on httpx / with top-1 confidence / exporting traces",
    )
    parser.add_argument("--targets", nargs="+", help="measure only these (and direct)")
    parser.add_argument(
        "--baseline", type=Path, help="a checkout to serve beside this one (git worktree)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "img" / "bench_overhead.png")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    load_cpu = "1" if pin else None

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "body.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = '{json.dumps(BODY)}'\n"
        )
        upstream_port = free_port()
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        all_targets = targets(work, upstream_url, args.litellm, args.variants, args.baseline)
        if args.targets:
            all_targets = [t for t in all_targets if t.name in {"direct", *args.targets}]
        upstream = subprocess.Popen(
            _pinned(
                [sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port)],
                load_cpu,
            ),
            cwd=ROOT,
        )
        all_targets[0].process = upstream
        try:
            for t in all_targets[1:]:
                t.process = subprocess.Popen(
                    _pinned(t.command, "0" if pin else None),
                    cwd=t.cwd,
                    env={**os.environ, **t.env},
                    stdout=subprocess.DEVNULL,
                )
            for t in all_targets:
                _wait_ready(t)
                wrk(t.url, 16, 2, script, load_cpu)  # warm-up: connections, caches, JIT-free paths
            runs: list[Run] = []
            for rnd in range(args.rounds):
                for conns in args.connections:
                    order = (
                        all_targets[rnd % len(all_targets) :]
                        + all_targets[: rnd % len(all_targets)]
                    )
                    batch = [measure(t, conns, args.duration, script, load_cpu, rnd) for t in order]
                    direct = next(r for r in batch if r.target == "direct")
                    for r in batch:
                        r.added_p50_ms = r.p50_ms - direct.p50_ms
                        print(
                            f"round {rnd} c={conns:>3} {r.target:<18} {r.rps:>8.0f} req/s  "
                            f"p50 {r.p50_ms:7.3f} ms  CPU {r.cpu_ms_per_request:6.3f} ms/req"
                            f"  errors {r.errors}",
                            flush=True,
                        )
                    runs.extend(batch)
        finally:
            for t in reversed(all_targets):  # the upstream last: no resets mid-shutdown
                if t.process is not None:
                    t.process.terminate()
                    t.process.wait(10)

    rows = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(
        json.dumps({"pinned": pin, "runs": [asdict(r) for r in runs], "summary": rows}, indent=1)
    )
    chart(rows, args.chart)
    print(
        f"\nmedians of {args.rounds} interleaved rounds, {args.duration:.0f} s each, pinned={pin}\n"
    )
    print(table(rows))
    print()
    print(ratios(rows))
    print(f"\nchart: {args.chart}\nraw: {args.out / 'overhead.json'}")


if __name__ == "__main__":
    main()
