"""/metrics after real traffic: every family a dashboard needs, bounded labels."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import REGISTRY, Gauge
from prometheus_client.parser import text_string_to_metric_families

from gateway.loop.registry import Registry
from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import (
    LABELS,
    ROOT,
    Gateway,
    TinyStudent,
    serve_in_thread,
    write_calibrator,
    write_task,
)
from tests.loop_fleet import add_version, loop_task, promote
from tests.redis_server import RedisServer

KEY_ENV = "DISTILLGATE_TEST_METRICS_KEY"
IN_DOMAIN = "I still have not received my card"
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def gw(tiny_student, run_gateway, tmp_path_factory) -> Gateway:  # type: ignore[no-untyped-def]
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "k")
    sim = serve_in_thread(create_sim_app(SimulatedAnswers({}, LABELS)))
    tasks = tmp_path_factory.mktemp("metrics-tasks")
    calibrator = write_calibrator(tasks / "c.json", tiny_student.path, target_accuracy=0.9)
    teacher = f'[teacher]\nbase_url = "{sim.url}"\napi_key_env = "{KEY_ENV}"\n'
    extra = f'calibrator = "{calibrator}"\n' + teacher + "[capture]\naudit_rate = 1.0\n"
    write_task(tasks, tiny_student.path, extra=extra)
    gateway = run_gateway(Settings(tasks_dir=tasks, allow_force_route=True))
    client = gateway.client()
    ask = client.chat.completions.create
    message = [{"role": "user", "content": IN_DOMAIN}]
    ask(model="banking77", messages=message)  # accepted (and audited)
    ask(model="banking77", messages=message, extra_headers={"x-distillgate-force-route": "teacher"})
    for _ in ask(model="banking77", messages=message, stream=True):
        pass
    with pytest.raises(openai.NotFoundError):
        ask(model="no-such-task", messages=message)
    yield gateway
    mp.undo()
    sim.stop()


def families(gw: Gateway) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(f"{gw.url}/metrics").text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for got, v in samples if all(got.get(k) == x for k, x in labels.items()))


def test_traffic_is_counted_by_task_route_and_status(gw: Gateway) -> None:
    f = families(gw)
    requests = f["distillgate_requests_total"]
    assert value(requests, task="banking77", route="student", status="200") == 2
    assert value(requests, task="banking77", route="teacher", status="200") == 1
    assert value(requests, task="unknown", route="none", status="404") == 1
    assert value(f["distillgate_request_seconds_count"], task="banking77", route="student") == 1
    assert value(f["distillgate_time_to_first_token_seconds_count"], task="banking77") == 1
    assert value(f["distillgate_student_seconds_count"], task="banking77") == 3
    assert value(f["distillgate_confidence_count"], task="banking77") == 3
    assert value(f["distillgate_escalations_total"], task="banking77", reason="forced") == 1
    assert value(f["distillgate_http_requests_total"], path="/v1/chat/completions") == 4


def test_teacher_spend_and_savings(gw: Gateway) -> None:
    f = families(gw)
    cost = f["distillgate_teacher_cost_usd_total"]
    assert value(cost, task="banking77", purpose="escalation") > 0
    assert value(f["distillgate_teacher_tokens_total"], direction="input", purpose="escalation") > 0
    assert value(f["distillgate_teacher_seconds_count"], purpose="escalation") == 1
    # the first accepted answer came before any teacher call had a price; the stream's after
    assert value(f["distillgate_estimated_savings_usd_total"], task="banking77") > 0


def test_live_state_is_read_at_scrape_time(gw: Gateway) -> None:
    f = families(gw)
    assert value(f["distillgate_calibrator_threshold"], task="banking77") == 0.75
    assert value(f["distillgate_calibrator_temperature"], task="banking77") == 1.0
    assert value(f["distillgate_calibrator_target_accuracy"], task="banking77") == 0.9
    (labels, one) = f["distillgate_calibrator_info"][0]
    assert one == 1 and labels["version"].startswith("cal-")
    assert value(f["distillgate_teacher_circuit_open"], task="banking77") == 0
    assert "distillgate_teacher_retries_total" in f
    assert value(f["distillgate_engine_queue_depth"], task="banking77") == 0
    assert value(f["distillgate_audits_total"], task="banking77") >= 1


def test_vllm_metrics_in_the_process_registry_are_passed_through(gw: Gateway) -> None:
    # what vLLM's in-process engine does: register vllm:* collectors in the default registry
    running = Gauge("vllm:num_requests_running", "Requests running in vLLM.", registry=REGISTRY)
    other = Gauge("some_library_metric", "Not ours, not vLLM's.", registry=REGISTRY)
    try:
        running.set(3)
        f = families(gw)
        assert value(f["vllm:num_requests_running"]) == 3
        assert "some_library_metric" not in f
    finally:
        REGISTRY.unregister(running)
        REGISTRY.unregister(other)


def test_names_and_labels_are_safe(gw: Gateway) -> None:
    text = httpx.get(f"{gw.url}/metrics").text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}
    assert names and all(n.startswith("distillgate_") and "vllm" not in n for n in names)
    assert not re.search(r"req-|chatcmpl|request_id|user=", text)  # no unbounded labels


def test_every_series_a_dashboard_reads_is_there_from_start_up(
    tiny_student: TinyStudent, run_gateway, redis_server: RedisServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Scraped before the first request: a loop task serving its first version (no trial
    yet), capture and shared limits in Redis. Every name the dashboards and alerts query
    has a sample, so no panel says "No data" for what has simply not happened yet."""
    tasks = loop_task(tmp_path, teacher=tiny_student, extra="usd_per_day = 100.0\n")  # a budget
    registry = Registry(tmp_path / "registry", "banking77")
    version = add_version(registry, tiny_student.path)
    fitted = {"target_accuracy": 0.9, "metrics_after": {"coverage": 0.6}}  # as calibrate writes
    write_calibrator(registry.calibrator(version), registry.student_dir(version), **fitted)
    promote(registry, version)
    gw = run_gateway(
        Settings(
            tasks_dir=tasks, redis_url=redis_server.url, loop="off", spool_dir=tmp_path / "spool"
        )
    )
    text = httpx.get(f"{gw.url}/metrics").text
    queried = "".join(p.read_text() for p in DEPLOY.rglob("*") if p.suffix in (".json", ".yml"))
    names = set(re.findall(r"distillgate_[a-z_]+", queried))
    sampled = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}
    assert names - sampled == set()
    assert 'distillgate_student_trial_share{stage="none",task="banking77",version="none"} 0.0' in (
        text
    )
