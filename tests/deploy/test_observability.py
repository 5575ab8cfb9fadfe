"""The dashboards and alerts against a real Prometheus scraping a live gateway.

Every PromQL expression in ``deploy/grafana/dashboards/*.json`` and
``deploy/prometheus/alerts.yml`` is sent to Prometheus's query API after a short load:
each must parse, and each dashboard query must return data, so no panel stays empty
because of a misspelt metric or label. promtool checks the config and the rules, and runs
the rules' unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import LABELS, Gateway, free_port, serve_in_thread, write_calibrator, write_task
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KEY_ENV = "DISTILLGATE_TEST_OBS_KEY"
VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$task": ".*", "$instance": ".*"}


def dashboard_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((path.stem, panel["title"], target["expr"]))
    return out


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=DEPLOY)


def test_promtool_accepts_the_config_and_rules_and_their_unit_tests_pass() -> None:
    for args in (
        ("check", "config", "prometheus/prometheus.yml"),
        ("check", "rules", "prometheus/alerts.yml"),
        ("test", "rules", "prometheus/alerts.test.yml"),
    ):
        done = promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test() -> None:
    tests = (DEPLOY / "prometheus" / "alerts.test.yml").read_text()
    assert all(f"alertname: {name}" in tests for name, _ in alert_queries())


def test_the_dashboard_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    sys.path.insert(0, str(DEPLOY / "grafana"))
    import dashboards  # type: ignore[import-not-found]

    written = dashboards.write(tmp_path)
    for path in written:
        committed = DEPLOY / "grafana" / "dashboards" / path.name
        assert json.loads(path.read_text()) == json.loads(committed.read_text())
    committed = {p.name for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")}
    assert {p.name for p in written} == committed  # none stale, none missing


class Prometheus:
    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
                    "scrape_configs": [
                        {"job_name": "distillgate", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def query(self, expr: str) -> dict[str, Any]:
        r = httpx.get(
            f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expr}, timeout=10
        )
        return r.json()  # type: ignore[no-any-return]

    def wait_for(self, expr: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.query(expr)["data"]["result"]:
                    return
            except (httpx.TransportError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"Prometheus never had {expr}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def scraped(tiny_student, run_gateway, tmp_path_factory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("observability")
    redis = RedisServer(tmp / "redis")
    redis.start()
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "k")
    sim = serve_in_thread(create_sim_app(SimulatedAnswers({}, LABELS)))
    # The traffic below is confident in-domain prompts (and forced escalations, which the
    # drift alert leaves aside): a calibrator that expects to keep all of them. (With every
    # series created at 0, an expectation the traffic does not meet is a live alert.)
    calibrator = write_calibrator(
        tmp / "c.json", tiny_student.path, target_accuracy=0.9, metrics_after={"coverage": 1.0}
    )
    teacher = f'[teacher]\nbase_url = "{sim.url}"\napi_key_env = "{KEY_ENV}"\n'
    teacher += "usd_per_day = 100.0\n"  # the budget series
    extra = f'calibrator = "{calibrator}"\n' + teacher + "[capture]\naudit_rate = 1.0\n"
    extra += f'[loop]\nregistry = "{tmp / "registry"}"\n'  # the loop's series too
    write_task(tmp / "tasks", tiny_student.path, extra=extra)
    gw: Gateway = run_gateway(
        Settings(
            tasks_dir=tmp / "tasks",
            allow_force_route=True,
            redis_url=redis.url,
            spool_dir=tmp / "spool",
            loop="off",
        )
    )
    prometheus = Prometheus(tmp, gw.url.removeprefix("http://"))
    prometheus.wait_for('up{job="distillgate"} == 1')

    def traffic(kind: int) -> None:
        client = gw.client()
        message = [{"role": "user", "content": "I still have not received my card"}]
        for _ in range(12):
            if kind == 0:
                client.chat.completions.create(model="banking77", messages=message)
            elif kind == 1:
                client.chat.completions.create(
                    model="banking77",
                    messages=[{"role": "user", "content": "zxqv blorf"}],
                    extra_headers={"x-distillgate-force-route": "teacher"},
                )
            else:
                for _ in client.chat.completions.create(
                    model="banking77", messages=message, stream=True
                ):
                    pass
            time.sleep(0.25)

    threads = [threading.Thread(target=traffic, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    prometheus.wait_for("distillgate_audit_agreement")
    time.sleep(3)  # a few more scrapes, so every rate() has two samples after the load
    yield prometheus
    prometheus.stop()
    sim.stop()
    mp.undo()
    redis.stop()


@pytest.mark.parametrize(("dashboard", "panel", "expr"), dashboard_queries())
def test_every_dashboard_query_returns_data(
    scraped: Prometheus, dashboard: str, panel: str, expr: str
) -> None:
    answer = scraped.query(substitute(expr))
    assert answer["status"] == "success", answer
    assert answer["data"]["result"], f"{dashboard} / {panel}: no data for {expr}"


@pytest.mark.parametrize(("alert", "expr"), alert_queries())
def test_every_alert_expression_parses_against_live_data(
    scraped: Prometheus, alert: str, expr: str
) -> None:
    answer = scraped.query(expr)
    assert answer["status"] == "success", answer
    assert not answer["data"]["result"], f"{alert} fires on healthy traffic"
